//! Write transactions that never hand a broken connection back to the pool.
//!
//! sqlx's own `Transaction` lowers its depth counter only when `COMMIT` or
//! `ROLLBACK` succeeds. When SQLite fails a commit (disk full, I/O error) it has
//! often rolled back already, so sqlx's rollback fails too and the connection
//! goes back to the pool believing it is still inside a transaction: every later
//! `BEGIN` on it fails ("attempted to call begin_with at non-zero transaction
//! depth") long after the disk has space again. [`WriteTx`] issues `BEGIN` /
//! `COMMIT` itself and closes its connection instead of returning it whenever a
//! transaction does not end in a successful `COMMIT` or `ROLLBACK`.

use std::ops::{Deref, DerefMut};

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Executor};

use super::{Backend, StoreResult};

/// An open write transaction on a pooled connection. Dereferences to the
/// connection, so `&mut *tx` is an executor.
pub struct WriteTx {
    conn: PoolConnection<Any>,
    open: bool,
}

impl WriteTx {
    /// `BEGIN IMMEDIATE` on SQLite (the write lock is taken up front, so the
    /// transaction never fails half-way on a busy lock), `BEGIN` on PostgreSQL.
    pub async fn begin(pool: &AnyPool, backend: Backend) -> StoreResult<WriteTx> {
        let begin = match backend {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        };
        // Marked open before BEGIN is sent: if BEGIN fails, or this future is
        // cancelled while BEGIN waits for a lock, the connection is closed.
        let mut tx = WriteTx {
            conn: pool.acquire().await?,
            open: true,
        };
        tx.conn.execute(begin).await?;
        Ok(tx)
    }

    /// Commits. On failure the connection is closed, never pooled again.
    pub async fn commit(mut self) -> StoreResult<()> {
        self.conn.execute("COMMIT").await?;
        self.open = false;
        Ok(())
    }

    /// Rolls back now, so no lock outlives the call.
    pub async fn rollback(mut self) -> StoreResult<()> {
        self.conn.execute("ROLLBACK").await?;
        self.open = false;
        Ok(())
    }

    /// Commits on `Ok`, rolls back on `Err`, and returns `result` (or the commit's error).
    pub async fn finish<T>(self, result: StoreResult<T>) -> StoreResult<T> {
        match result {
            Ok(v) => {
                self.commit().await?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.rollback().await;
                Err(e)
            }
        }
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        // Dropped mid-transaction (an error, a cancelled future, a failed
        // COMMIT/ROLLBACK): closing the connection ends the transaction in the
        // database, and the pool opens a fresh one when it needs it.
        if self.open {
            self.conn.close_on_drop();
        }
    }
}

impl Deref for WriteTx {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.conn
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.conn
    }
}

/// What kind of database failure an error is, for the group writer (retry case
/// by case, or fail the whole group at once) and for clients (never the
/// database's own text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Locked by another writer, or the pool had no connection in time.
    Busy,
    /// Out of disk (or quota).
    Full,
    /// Anything else, including a constraint one job violated.
    Other,
}

impl FailureKind {
    pub fn describe(self) -> &'static str {
        match self {
            FailureKind::Busy => "the database is busy (locked by another writer)",
            FailureKind::Full => "the database is out of space",
            FailureKind::Other => "the database failed",
        }
    }
}

pub fn failure_kind(e: &sqlx::Error) -> FailureKind {
    match e {
        sqlx::Error::PoolTimedOut => FailureKind::Busy,
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            // SQLite reports (extended) result codes as numbers; the primary code
            // is the low byte. PostgreSQL reports SQLSTATEs.
            if let Ok(n) = code.parse::<i64>() {
                return match n & 0xff {
                    5 | 6 => FailureKind::Busy, // SQLITE_BUSY, SQLITE_LOCKED
                    13 => FailureKind::Full,    // SQLITE_FULL
                    _ => FailureKind::Other,
                };
            }
            match code.as_str() {
                "53100" => FailureKind::Full,                               // disk_full
                "55P03" | "40P01" | "57014" | "53300" => FailureKind::Busy, // lock, deadlock, timeout, too many connections
                _ => FailureKind::Other,
            }
        }
        _ => FailureKind::Other,
    }
}

/// True when the error is one job's own fault (a constraint it violated), so the
/// others of its group may still commit without it.
pub fn is_per_job(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => !matches!(db.kind(), sqlx::error::ErrorKind::Other),
        _ => false,
    }
}
