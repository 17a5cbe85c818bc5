use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum LogError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("offset {requested} is out of range [{start}, {end}]")]
    OffsetOutOfRange {
        requested: i64,
        start: i64,
        end: i64,
    },
    #[error("record batch rejected: {0}")]
    Batch(#[from] strata_record::BatchError),
    #[error("replicated batch at offset {got} does not follow the log end {expected}")]
    NotContiguous { expected: i64, got: i64 },
    #[error("log {0} is corrupt: {1}")]
    Corrupt(PathBuf, String),
    /// A cached-only read found data that is not in the page cache (never
    /// returned by [`crate::LogRead::read_cached`], which says `None`).
    #[error("log data is not in the page cache")]
    NotCached,
}

pub(crate) trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T, LogError>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T, LogError> {
        self.map_err(|source| LogError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}
