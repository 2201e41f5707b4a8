//! The store: the only code that speaks SQL. One file per resource (supernets and their blobs,
//! plans, candidates, evaluations, fleets, jobs), typed rows, and [`StoreError`], which the wire
//! error maps in one place (`crate::error`).
//!
//! SQLite, embedded: one writer connection (writes queue in-process instead of contending for the
//! file lock, so requests never see SQLITE_BUSY), a pool of readers (WAL lets them read while the
//! writer writes), migrations from `migrations/sqlite/`. Worker processes open the same file;
//! SQLite's busy timeout orders their writes. PostgreSQL (`postgres://…`): one pool, migrations
//! from `migrations/postgres/`.

/// A closed set of values stored as text: `as_str` for writing, `TryFrom<String>` for reading
/// (rows name it with `#[sqlx(try_from = "String")]`), serde with the same names.
macro_rules! text_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)*
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<$name, String> {
                match s {
                    $($text => Ok($name::$variant),)*
                    other => Err(format!(
                        "{other:?} is not one of {}",
                        [$($text),*].join(", ")
                    )),
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;

            fn try_from(s: String) -> Result<$name, String> {
                s.parse()
            }
        }
    };
}

mod candidates;
mod evaluations;
mod fleets;
mod jobs;
mod leases;
mod plan_writer;
mod plans;
mod searches;
mod supernets;

pub use candidates::{CandidateFields, CandidateFilter, CandidatePage, CandidateRow, SORTS};
pub use evaluations::{MetricsRow, NewEvaluation};
pub use fleets::{DeviceRow, FleetDevice, FleetPlanRow, FleetRow};
pub use jobs::{EvaluateWork, JobRow, JobStatus, SensitivityWork, Work, MAX_ATTEMPTS};
pub use leases::{Ending, Held, Lease, LEASE};
pub use plan_writer::{NewPlan, PlanWriter};
pub use plans::{PlanRow, PlanStatus};
pub use searches::{DeletedSearch, SearchRow};
pub use supernets::{Deleted, Dependents, SupernetRow, Upload};

use serde_json::Value;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{AnyConnection, AnyPool, Executor};
use std::path::Path;
use std::time::Duration;

/// A store operation that failed: what was asked for does not exist, or the database failed.
#[derive(Debug)]
pub enum StoreError {
    /// No `what` with this id (or it was deleted meanwhile).
    NotFound {
        what: &'static str,
        id: String,
    },
    /// A stored document that this program cannot read back (a bug, or a hand-edited row).
    Corrupt(String),
    /// A worker wrote under a lease it no longer holds (the job went to another worker): nothing
    /// was written.
    LeaseLost(String),
    Database(sqlx::Error),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::NotFound { what, id } => write!(f, "{what} {id:?} does not exist"),
            StoreError::Corrupt(m) => write!(f, "stored data: {m}"),
            StoreError::LeaseLost(job) => write!(f, "job {job}: its lease was lost"),
            StoreError::Database(e) => write!(f, "database: {e}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        StoreError::Database(e)
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

fn not_found(what: &'static str, id: &str) -> StoreError {
    StoreError::NotFound {
        what,
        id: id.to_string(),
    }
}

/// Which database holds the store. The SQL is shared (`$N` parameters, `RETURNING`,
/// `ON CONFLICT`), but for where the two differ: how a write transaction starts, and how a job
/// is claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");

/// The database: a writer pool and a reader pool (on SQLite, one writer connection, so that
/// writes queue in-process instead of contending for the file lock; on Postgres, one pool).
#[derive(Debug, Clone)]
pub struct Db {
    write: AnyPool,
    read: AnyPool,
    dialect: Dialect,
}

impl Db {
    /// Opens the store at `url`: `postgres://…`, or `sqlite://PATH` (created if missing), and
    /// applies pending migrations. `readers` bounds the reader pool.
    pub async fn open(url: &str, readers: u32) -> anyhow::Result<Db> {
        sqlx::any::install_default_drivers();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = AnyPoolOptions::new()
                .max_connections(readers.max(2) + 8)
                .acquire_timeout(Duration::from_secs(30))
                .connect(url)
                .await?;
            POSTGRES_MIGRATIONS.run(&pool).await?;
            return Ok(Db {
                write: pool.clone(),
                read: pool,
                dialect: Dialect::Postgres,
            });
        }
        anyhow::ensure!(
            url.starts_with("sqlite:"),
            "database URL {url:?}: expected postgres://… or sqlite://PATH"
        );
        // WAL: readers never block the writer. synchronous=NORMAL in WAL mode loses nothing
        // when the process is killed (commits are in the OS's file cache), only on power loss.
        let write = AnyPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                         PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                    )
                    .await?;
                    Ok(())
                })
            })
            .connect(&format!("{url}?mode=rwc"))
            .await?;
        SQLITE_MIGRATIONS.run(&write).await?;
        let read = AnyPoolOptions::new()
            .max_connections(readers.max(1))
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("PRAGMA busy_timeout = 10000;").await?;
                    Ok(())
                })
            })
            .connect(&format!("{url}?mode=ro"))
            .await?;
        Ok(Db {
            write,
            read,
            dialect: Dialect::Sqlite,
        })
    }

    /// The URL of an SQLite file.
    pub fn sqlite_url(path: &Path) -> String {
        format!("sqlite://{}", path.display())
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// A write transaction. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`): with
    /// worker processes writing the same file, a deferred transaction that reads first could fail
    /// to upgrade to a writer without waiting for the busy timeout.
    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.dialect {
            Dialect::Sqlite => self.write.begin_with("BEGIN IMMEDIATE").await,
            Dialect::Postgres => self.write.begin().await,
        }
    }

    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }

    /// Answers when the database does (the health probe).
    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    /// How many rows `table` holds.
    pub async fn count(&self, table: Table) -> StoreResult<i64> {
        let sql = format!("SELECT COUNT(*) FROM {}", table.name());
        Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&self.read)
            .await?)
    }
}

/// A connection (or transaction) the resource files' helpers run on.
type Conn = AnyConnection;

/// Bound values one multi-row INSERT carries at most. Binding costs grow with the square of a
/// statement's values on SQLite through sqlx: 31,648 candidates took 33 s in chunks of 2,000 rows
/// (24,000 values) and 1.3 s in chunks of 25 rows (300 values).
const STATEMENT_VALUES: usize = 384;

/// Rows of `columns` values one multi-row INSERT carries (see [`STATEMENT_VALUES`]).
const fn rows_per_statement(columns: usize) -> usize {
    assert!(
        columns > 0 && columns <= STATEMENT_VALUES,
        "a row's values fit one statement"
    );
    STATEMENT_VALUES / columns
}

/// Appends `rows` groups of `columns` numbered parameters to a multi-row INSERT:
/// `($1,$2),($3,$4)`.
fn push_rows(sql: &mut String, rows: usize, columns: usize) {
    use std::fmt::Write;
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ",(" });
        for c in 0..columns {
            let sep = if c == 0 { "" } else { "," };
            let _ = write!(sql, "{sep}${}", r * columns + c + 1);
        }
        sql.push(')');
    }
}

/// The tables whose rows can be counted (for tests and operators).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Blobs,
    Supernets,
    Plans,
    Candidates,
    Evaluations,
    Jobs,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Blobs => "blobs",
            Table::Supernets => "supernets",
            Table::Plans => "plans",
            Table::Candidates => "candidates",
            Table::Evaluations => "evaluations",
            Table::Jobs => "jobs",
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `2026-11-27T18:14:44.123Z` from Unix milliseconds (proleptic Gregorian, UTC).
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A new identifier: a kind prefix and a time-ordered UUID (v7), e.g. `plan_0193…`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// Parses a JSON column written by this program.
pub fn json_column(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// Bit-widths in manifest order as stored: the key candidates and evaluations share.
pub fn bits_key(bits: &[u8]) -> String {
    serde_json::to_string(bits).expect("JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_804_484_123), "2026-11-27T18:34:44.123Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }
}
