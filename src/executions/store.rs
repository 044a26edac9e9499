//! The local placement's executions, kept in SQLite under the service's state directory, so that
//! finished results outlive a restart. One connection, used on the blocking pool.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::record::{Record, State};
use crate::sandbox::Envelope;

/// The database file inside the state directory.
pub const FILE_NAME: &str = "executions.sqlite3";

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("creating the state directory {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("opening {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("the executions database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("a stored envelope is not valid: {0}")]
    Envelope(#[from] serde_json::Error),
    #[error("the executions database is unusable: a thread using it panicked")]
    Poisoned,
    #[error("the executions database task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS executions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    started_ms INTEGER,
    finished_ms INTEGER,
    envelope TEXT,
    warnings TEXT NOT NULL,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS executions_finished ON executions (finished_ms);
";

/// What a listing row carries: its position (for the next page) and the execution.
pub type Listed = (i64, Record);

#[derive(Clone)]
pub struct Store {
    connection: Arc<Mutex<Connection>>,
}

impl Store {
    /// Opens (or creates) the database in `dir`, and marks every execution that was unfinished
    /// when the service last stopped as failed with `reason`. Returns how many it marked.
    pub fn open(dir: &Path, reason: &str, now_ms: i64) -> Result<(Store, usize), StoreError> {
        create_private_dir(dir)?;
        let path = dir.join(FILE_NAME);
        let connection = Connection::open(&path).map_err(|source| StoreError::Open { path: path.clone(), source })?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        connection.execute_batch(SCHEMA)?;
        let cut_off = connection.execute(
            "UPDATE executions SET state = ?1, finished_ms = ?2, reason = ?3 WHERE state IN (?4, ?5)",
            params![State::Failed.as_str(), now_ms, reason, State::Queued.as_str(), State::Running.as_str()],
        )?;
        Ok((Store { connection: Arc::new(Mutex::new(connection)) }, cut_off))
    }

    /// Runs `work` on the connection on the blocking pool (a large envelope takes a while).
    async fn with<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let connection = self.connection.clone();
        tokio::task::spawn_blocking(move || {
            let connection = connection.lock().map_err(|_| StoreError::Poisoned)?;
            work(&connection)
        })
        .await?
    }

    pub async fn insert(&self, record: Record) -> Result<(), StoreError> {
        self.with(move |c| {
            let envelope = record.envelope.as_ref().map(serde_json::to_string).transpose()?;
            c.execute(
                "INSERT INTO executions (id, state, created_ms, started_ms, finished_ms, envelope, warnings, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    record.id,
                    record.state.as_str(),
                    record.created_ms,
                    record.started_ms,
                    record.finished_ms,
                    envelope,
                    serde_json::to_string(&record.warnings)?,
                    record.reason,
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// Marks an unfinished execution as running.
    pub async fn started(&self, id: &str, at_ms: i64) -> Result<(), StoreError> {
        let id = id.to_string();
        self.with(move |c| {
            c.execute(
                "UPDATE executions SET state = ?1, started_ms = ?2 WHERE id = ?3 AND state = ?4",
                params![State::Running.as_str(), at_ms, id, State::Queued.as_str()],
            )?;
            Ok(())
        })
        .await
    }

    /// Records an execution's end: its final state, and its envelope or the reason it has none.
    pub async fn finished(
        &self,
        id: &str,
        state: State,
        at_ms: i64,
        envelope: Option<Envelope>,
        reason: Option<String>,
    ) -> Result<(), StoreError> {
        let id = id.to_string();
        self.with(move |c| {
            let envelope = envelope.as_ref().map(serde_json::to_string).transpose()?;
            c.execute(
                "UPDATE executions SET state = ?1, finished_ms = ?2, envelope = ?3, reason = ?4 WHERE id = ?5",
                params![state.as_str(), at_ms, envelope, reason, id],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn get(&self, id: &str) -> Result<Option<Record>, StoreError> {
        let id = id.to_string();
        self.with(move |c| {
            let row = c
                .query_row(
                    "SELECT seq, id, state, created_ms, started_ms, finished_ms, envelope, warnings, reason
                     FROM executions WHERE id = ?1",
                    params![id],
                    raw_row,
                )
                .optional()?;
            row.map(|raw| raw.into_record().map(|(_, record)| record)).transpose()
        })
        .await
    }

    /// Up to `limit` executions, newest first, from before position `before` (all when none),
    /// without their envelopes.
    pub async fn list(&self, before: Option<i64>, limit: usize) -> Result<Vec<Listed>, StoreError> {
        self.with(move |c| {
            let mut statement = c.prepare(
                "SELECT seq, id, state, created_ms, started_ms, finished_ms, NULL, warnings, reason
                 FROM executions WHERE seq < ?1 ORDER BY seq DESC LIMIT ?2",
            )?;
            let rows = statement.query_map(params![before.unwrap_or(i64::MAX), limit as i64], raw_row)?;
            let mut listed = Vec::new();
            for row in rows {
                listed.push(row?.into_record()?);
            }
            Ok(listed)
        })
        .await
    }

    /// Removes the executions that finished before `cutoff_ms`; returns how many.
    pub async fn remove_finished_before(&self, cutoff_ms: i64) -> Result<usize, StoreError> {
        self.with(move |c| {
            Ok(c.execute(
                "DELETE FROM executions WHERE finished_ms IS NOT NULL AND finished_ms < ?1",
                params![cutoff_ms],
            )?)
        })
        .await
    }
}

/// A row as read, before its JSON columns and state are checked.
struct RawRow {
    seq: i64,
    id: String,
    state: String,
    created_ms: i64,
    started_ms: Option<i64>,
    finished_ms: Option<i64>,
    envelope: Option<String>,
    warnings: String,
    reason: Option<String>,
}

fn raw_row(row: &Row<'_>) -> rusqlite::Result<RawRow> {
    Ok(RawRow {
        seq: row.get(0)?,
        id: row.get(1)?,
        state: row.get(2)?,
        created_ms: row.get(3)?,
        started_ms: row.get(4)?,
        finished_ms: row.get(5)?,
        envelope: row.get(6)?,
        warnings: row.get(7)?,
        reason: row.get(8)?,
    })
}

impl RawRow {
    fn into_record(self) -> Result<Listed, StoreError> {
        let envelope = self.envelope.as_deref().map(serde_json::from_str).transpose()?;
        // A state this version does not know is shown as failed rather than refused.
        let state = State::parse(&self.state).unwrap_or(State::Failed);
        let record = Record {
            id: self.id,
            state,
            created_ms: self.created_ms,
            started_ms: self.started_ms,
            finished_ms: self.finished_ms,
            envelope,
            warnings: serde_json::from_str(&self.warnings)?,
            reason: self.reason,
        };
        Ok((self.seq, record))
    }
}

/// The state directory, readable by the service's user only (results may be private).
fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::DirBuilderExt;
    let created = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir);
    created.map_err(|source| StoreError::CreateDir { path: dir.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::Outcome;

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pyexec-store-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    fn id(n: u8) -> String {
        format!("{n:032x}")
    }

    #[tokio::test]
    async fn a_finished_execution_survives_a_reopen_and_an_unfinished_one_is_marked_failed() {
        let dir = temp_dir();
        let (store, cut) = Store::open(&dir, "restart", 1).expect("open");
        assert_eq!(cut, 0);
        store.insert(Record::queued(id(1), 10, vec!["w".into()])).await.expect("insert");
        store.insert(Record::queued(id(2), 11, Vec::new())).await.expect("insert");
        store.started(&id(2), 12).await.expect("started");
        let envelope = Envelope::rejected(Outcome::NoMain, "no main");
        store.finished(&id(1), State::Failed, 13, Some(envelope.clone()), None).await.expect("finish");
        drop(store);

        let (store, cut) = Store::open(&dir, "the service stopped", 20).expect("reopen");
        assert_eq!(cut, 1, "the running one is cut off");
        let first = store.get(&id(1)).await.expect("get").expect("kept");
        assert_eq!((first.state, first.envelope, first.warnings), (State::Failed, Some(envelope), vec!["w".into()]));
        let second = store.get(&id(2)).await.expect("get").expect("kept");
        assert_eq!(
            (second.state, second.started_ms, second.finished_ms, second.reason.as_deref()),
            (State::Failed, Some(12), Some(20), Some("the service stopped"))
        );
        assert_eq!(store.get(&id(3)).await.expect("get"), None);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn listing_pages_newest_first_and_removal_keeps_the_unfinished() {
        let dir = temp_dir();
        let (store, _) = Store::open(&dir, "restart", 1).expect("open");
        for n in 1..=5 {
            store.insert(Record::queued(id(n), i64::from(n), Vec::new())).await.expect("insert");
        }
        let first = store.list(None, 2).await.expect("list");
        let ids: Vec<_> = first.iter().map(|(_, r)| r.id.clone()).collect();
        assert_eq!(ids, [id(5), id(4)]);
        let next = store.list(first.last().map(|(seq, _)| *seq), 10).await.expect("list");
        let ids: Vec<_> = next.iter().map(|(_, r)| r.id.clone()).collect();
        assert_eq!(ids, [id(3), id(2), id(1)]);

        store.finished(&id(1), State::Cancelled, 100, None, Some("cancelled".into())).await.expect("finish");
        store.finished(&id(2), State::Cancelled, 300, None, None).await.expect("finish");
        assert_eq!(store.remove_finished_before(200).await.expect("remove"), 1);
        assert_eq!(store.get(&id(1)).await.expect("get"), None);
        assert!(store.get(&id(2)).await.expect("get").is_some());
        assert!(store.get(&id(3)).await.expect("get").is_some(), "unfinished ones stay");
        let _ = std::fs::remove_dir_all(dir);
    }
}
