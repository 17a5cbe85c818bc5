//! `strata txn list|describe|producers`: transactional ids and their
//! state (ListTransactions on every broker, DescribeTransactions at the
//! coordinator) and the producers each partition knows (DescribeProducers
//! at the partition's leader).

use super::route::Routes;
use super::{error_text, s};
use anyhow::bail;
use clap::{Args, Subcommand};
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::{
    DescribeProducersRequest, DescribeTransactionsRequest, ListTransactionsRequest, TopicName,
    TransactionalId,
};

#[derive(Args)]
pub struct TxnArgs {
    #[command(subcommand)]
    cmd: TxnCmd,
}

#[derive(Subcommand)]
enum TxnCmd {
    /// Transactional ids with their producer id and state.
    List {
        #[arg(long)]
        bootstrap: String,
        /// Only ids in this state (e.g. Ongoing, PrepareCommit).
        #[arg(long)]
        state: Option<String>,
    },
    /// State, producer id and epoch, timeout and partitions of one id.
    Describe {
        #[arg(long)]
        bootstrap: String,
        #[arg(long)]
        id: String,
    },
    /// Producers with state on each partition of a topic, with the first
    /// offset of their open transaction (what holds the LSO back).
    Producers {
        #[arg(long)]
        bootstrap: String,
        #[arg(long)]
        topic: String,
    },
}

pub async fn run(a: TxnArgs) -> anyhow::Result<()> {
    match a.cmd {
        TxnCmd::List { bootstrap, state } => {
            let mut r = Routes::connect(&bootstrap).await?;
            let mut rows = Vec::new();
            for node in r.all_brokers().await? {
                let mut req = ListTransactionsRequest::default();
                req.state_filters = state.iter().map(|x| s(x.clone())).collect();
                req.duration_filter = -1;
                let resp = r.broker(node).await?.call(req, 1).await?;
                if resp.error_code != 0 {
                    bail!("broker {node}: {}", error_text(resp.error_code, None));
                }
                for t in resp.transaction_states {
                    rows.push((
                        t.transactional_id.to_string(),
                        t.producer_id.0,
                        t.transaction_state.to_string(),
                        node,
                    ));
                }
            }
            rows.sort();
            println!("TRANSACTIONAL_ID PRODUCER_ID STATE COORDINATOR");
            for (id, pid, st, node) in rows {
                println!("{id} {pid} {st} {node}");
            }
        }
        TxnCmd::Describe { bootstrap, id } => {
            let mut r = Routes::connect(&bootstrap).await?;
            let node = r.txn_coordinator(&id).await?;
            let mut req = DescribeTransactionsRequest::default();
            req.transactional_ids = vec![TransactionalId(s(id.clone()))];
            let resp = r.broker(node).await?.call(req, 0).await?;
            let Some(t) = resp.transaction_states.into_iter().next() else {
                bail!("no description returned for {id}");
            };
            if t.error_code != 0 {
                bail!("{id}: {}", error_text(t.error_code, None));
            }
            println!("transactional id: {id}");
            println!("coordinator:      {node}");
            println!("state:            {}", t.transaction_state.as_str());
            println!(
                "producer:         id {} epoch {}",
                t.producer_id.0, t.producer_epoch
            );
            println!("timeout ms:       {}", t.transaction_timeout_ms);
            if t.transaction_start_time_ms >= 0 {
                println!("started ms:       {}", t.transaction_start_time_ms);
            }
            for td in t.topics {
                println!(
                    "partitions:       {} {:?}",
                    td.topic.as_str(),
                    td.partitions
                );
            }
        }
        TxnCmd::Producers { bootstrap, topic } => {
            let mut r = Routes::connect(&bootstrap).await?;
            let n = r.refresh(&topic).await?;
            println!("PARTITION PRODUCER_ID EPOCH LAST_SEQUENCE OPEN_TXN_START");
            for (leader, parts) in r.by_leader(&topic, 0..n)? {
                let mut req = DescribeProducersRequest::default();
                let mut tr = TopicRequest::default();
                tr.name = TopicName(s(topic.clone()));
                tr.partition_indexes = parts;
                req.topics = vec![tr];
                let resp = r.broker(leader).await?.call(req, 0).await?;
                for t in resp.topics {
                    for p in t.partitions {
                        if p.error_code != 0 {
                            bail!(
                                "{topic}-{}: {}",
                                p.partition_index,
                                error_text(p.error_code, p.error_message.as_ref())
                            );
                        }
                        for pr in p.active_producers {
                            println!(
                                "{} {} {} {} {}",
                                p.partition_index,
                                pr.producer_id.0,
                                pr.producer_epoch,
                                pr.last_sequence,
                                pr.current_txn_start_offset
                            );
                        }
                    }
                }
            }
        }
    }
    Ok(())
}
