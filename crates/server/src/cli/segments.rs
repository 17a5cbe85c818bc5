//! `strata segments list|inspect`: a topic's hot and cold segments, read
//! from a broker's HTTP endpoint (segment layout is not part of the Kafka
//! protocol). `list` on a partition's leader also shows its local segments.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Args)]
pub struct SegmentsArgs {
    #[command(subcommand)]
    cmd: SegmentsCmd,
}

#[derive(Subcommand)]
enum SegmentsCmd {
    /// Hot and cold segments with offsets, timestamps, sizes and object keys.
    List {
        /// A broker's HTTP address (HOST:PORT).
        #[arg(long)]
        http: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partition: Option<i32>,
    },
    /// The cold segment holding an offset, with its Parquet metadata.
    Inspect {
        #[arg(long)]
        http: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partition: i32,
        #[arg(long)]
        offset: i64,
    },
}

/// Minimal HTTP/1.1 GET against the broker's own endpoint.
async fn get(addr: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot reach {addr}"))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    let json: serde_json::Value = serde_json::from_str(body.trim())
        .with_context(|| format!("unexpected response: {body}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!(
            "{}",
            json.get("error").and_then(|e| e.as_str()).unwrap_or(head)
        );
    }
    Ok(json)
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub async fn run(a: SegmentsArgs) -> anyhow::Result<()> {
    match a.cmd {
        SegmentsCmd::List {
            http,
            topic,
            partition,
        } => {
            let mut path = format!("/v1/segments?topic={}", enc(&topic));
            if let Some(p) = partition {
                path.push_str(&format!("&partition={p}"));
            }
            let v = get(&http, &path).await?;
            for p in v.as_array().into_iter().flatten() {
                println!(
                    "{}-{} leader {}",
                    p["topic"].as_str().unwrap_or_default(),
                    p["partition"],
                    p["leader"]
                );
                for s in p["cold"].as_array().into_iter().flatten() {
                    println!(
                        "  cold [{}, {}] records {} bytes {} time [{}, {}] epoch {} {}",
                        s["base_offset"],
                        s["last_offset"],
                        s["records"],
                        s["bytes"],
                        s["min_timestamp"],
                        s["max_timestamp"],
                        s["epoch"],
                        s["object_key"].as_str().unwrap_or_default()
                    );
                }
                for s in p["hot"].as_array().into_iter().flatten() {
                    println!(
                        "  hot  [{}, {}] bytes {} max time {} {} {}",
                        s["base_offset"],
                        s["last_offset"],
                        s["size_bytes"],
                        s["max_timestamp"],
                        if s["sealed"].as_bool().unwrap_or(false) {
                            "sealed"
                        } else {
                            "active"
                        },
                        s["path"].as_str().unwrap_or_default()
                    );
                }
            }
        }
        SegmentsCmd::Inspect {
            http,
            topic,
            partition,
            offset,
        } => {
            let path = format!(
                "/v1/segments/inspect?topic={}&partition={partition}&offset={offset}",
                enc(&topic)
            );
            println!(
                "{}",
                serde_json::to_string_pretty(&get(&http, &path).await?)?
            );
        }
    }
    Ok(())
}
