//! A PostgreSQL database of a test's own: a new database on the server `scripts/test` started
//! (`BITPLAN_TEST_POSTGRES_URL`), or, when run without it, on a server this test starts itself
//! with `scripts/postgres` and stops when it is done. Nothing is mocked.

use std::path::PathBuf;
use std::process::Command;

/// A database for one test, and the server it started, if it started one.
pub struct TestDb {
    pub url: String,
    server: Option<OwnServer>,
}

/// A server started for one test: its folder and programs, to stop it.
struct OwnServer {
    dir: String,
    bin: String,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

impl TestDb {
    pub fn new() -> TestDb {
        let (server_url, server) = match std::env::var("BITPLAN_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => (url, None),
            _ => {
                let out = Command::new("bash")
                    .arg("-c")
                    .arg(
                        "set -e; source scripts/postgres; bp_pg_start; \
                         printf '%s\\n%s\\n%s\\n' \"$BITPLAN_TEST_POSTGRES_URL\" \"$BP_PG_DIR\" \"$BP_PG_BIN\"",
                    )
                    .current_dir(repo())
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "cannot start a PostgreSQL server: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let text = String::from_utf8(out.stdout).unwrap();
                let mut lines = text.lines().map(str::to_string);
                let url = lines.next().unwrap();
                let (dir, bin) = (lines.next().unwrap(), lines.next().unwrap());
                (url, Some(OwnServer { dir, bin }))
            }
        };
        let name = format!("t_{}", uuid::Uuid::now_v7().simple());
        // On a thread of its own: async tests call this from inside their runtime.
        let (at, db) = (server_url.clone(), name.clone());
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    use sqlx::Executor;
                    let pool = sqlx::PgPool::connect(&at).await.unwrap();
                    pool.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
                        .await
                        .unwrap();
                    pool.close().await;
                })
        })
        .join()
        .unwrap();
        let url = match server_url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("unexpected server URL {server_url}"),
        };
        TestDb { url, server }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(s) = &self.server {
            let _ = Command::new("bash")
                .arg("-c")
                .arg(
                    "source scripts/postgres; BP_PG_DIR=$1; BP_PG_BIN=$2; BP_PG_AS=(); \
                     [ \"$(id -u)\" -eq 0 ] && BP_PG_AS=(setpriv --reuid=nobody --regid=nogroup --clear-groups); \
                     bp_pg_stop",
                )
                .arg("stop")
                .arg(&s.dir)
                .arg(&s.bin)
                .current_dir(repo())
                .status();
        }
    }
}
