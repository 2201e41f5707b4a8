//! Device documents, fleets (ordered lists of devices), and fleet plans (a snapshot of the fleet,
//! the request, the job that plans it, and its result table).

use super::{jobs, leases, not_found, now_ms, Conn, Db, JobRow, PlanStatus, StoreResult, Work};
use serde_json::Value;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeviceRow {
    pub id: String,
    pub name: String,
    /// JSON: the device document.
    pub spec: String,
    pub created_at: i64,
}

/// A stored fleet with its devices in order.
#[derive(Debug, Clone)]
pub struct FleetRow {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub devices: Vec<DeviceRow>,
}

/// A device a new fleet lists: a stored one, or a new document stored with the fleet.
#[derive(Debug, Clone)]
pub enum FleetDevice<'a> {
    Stored(&'a str),
    New { name: &'a str, spec: &'a Value },
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FleetPlanRow {
    pub id: String,
    pub supernet_id: String,
    /// The fleet it was made for (it may be deleted since).
    pub fleet_id: String,
    /// JSON: the fleet as it was (name and device documents).
    pub fleet: String,
    /// JSON: the request.
    pub options: String,
    #[sqlx(try_from = "String")]
    pub status: PlanStatus,
    pub job_id: Option<String>,
    /// JSON: one row per device.
    pub result: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

const FLEET_PLAN_SELECT: &str =
    "SELECT id, supernet_id, fleet_id, fleet, options, status, job_id, \
     result, created_at, updated_at FROM fleet_plans";

async fn insert_device(conn: &mut Conn, name: &str, spec: &Value) -> Result<String, sqlx::Error> {
    let id = super::new_id("dev");
    sqlx::query("INSERT INTO devices (id, name, spec, created_at) VALUES ($1, $2, $3, $4)")
        .bind(&id)
        .bind(name)
        .bind(spec.to_string())
        .bind(now_ms())
        .execute(conn)
        .await?;
    Ok(id)
}

async fn fleet_plan_on(conn: &mut Conn, id: &str) -> StoreResult<FleetPlanRow> {
    sqlx::query_as::<_, FleetPlanRow>(sqlx::AssertSqlSafe(format!(
        "{FLEET_PLAN_SELECT} WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| not_found("fleet plan", id))
}

impl Db {
    /// Stores a checked device document; returns the new device's id.
    pub async fn insert_device(&self, name: &str, spec: &Value) -> StoreResult<String> {
        Ok(insert_device(&mut *self.write.acquire().await?, name, spec).await?)
    }

    pub async fn device(&self, id: &str) -> StoreResult<DeviceRow> {
        sqlx::query_as::<_, DeviceRow>(
            "SELECT id, name, spec, created_at FROM devices WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.read)
        .await?
        .ok_or_else(|| not_found("device", id))
    }

    pub async fn devices(&self) -> StoreResult<Vec<DeviceRow>> {
        Ok(sqlx::query_as::<_, DeviceRow>(
            "SELECT id, name, spec, created_at FROM devices ORDER BY created_at DESC, id DESC",
        )
        .fetch_all(&self.read)
        .await?)
    }

    /// Deletes a device unless fleets list it; returns those fleets' ids (empty when deleted).
    pub async fn delete_device(&self, id: &str) -> StoreResult<Vec<String>> {
        let mut tx = self.begin().await?;
        let fleets: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT fleet_id FROM fleet_devices WHERE device_id = $1")
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
        if !fleets.is_empty() {
            return Ok(fleets);
        }
        let deleted = sqlx::query("DELETE FROM devices WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(not_found("device", id));
        }
        tx.commit().await?;
        Ok(fleets)
    }

    pub async fn fleet(&self, id: &str) -> StoreResult<FleetRow> {
        let (name, created_at): (String, i64) =
            sqlx::query_as("SELECT name, created_at FROM fleets WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.read)
                .await?
                .ok_or_else(|| not_found("fleet", id))?;
        let devices = sqlx::query_as::<_, DeviceRow>(
            "SELECT d.id, d.name, d.spec, d.created_at FROM fleet_devices f \
             JOIN devices d ON d.id = f.device_id WHERE f.fleet_id = $1 ORDER BY f.position",
        )
        .bind(id)
        .fetch_all(&self.read)
        .await?;
        Ok(FleetRow {
            id: id.to_string(),
            name,
            created_at,
            devices,
        })
    }

    /// Every fleet, newest first.
    pub async fn fleets(&self) -> StoreResult<Vec<FleetRow>> {
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT id FROM fleets ORDER BY created_at DESC, id DESC")
                .fetch_all(&self.read)
                .await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.fleet(&id).await?);
        }
        Ok(out)
    }

    /// Stores a fleet and the new device documents it lists, in one transaction; returns its id.
    pub async fn insert_fleet(
        &self,
        name: &str,
        devices: &[FleetDevice<'_>],
    ) -> StoreResult<String> {
        let id = super::new_id("fleet");
        let mut tx = self.begin().await?;
        sqlx::query("INSERT INTO fleets (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(&id)
            .bind(name)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        for (i, d) in devices.iter().enumerate() {
            let device_id = match d {
                FleetDevice::Stored(s) => s.to_string(),
                FleetDevice::New { name, spec } => insert_device(&mut tx, name, spec).await?,
            };
            sqlx::query(
                "INSERT INTO fleet_devices (fleet_id, position, device_id) VALUES ($1, $2, $3)",
            )
            .bind(&id)
            .bind(i as i64)
            .bind(device_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    /// Deletes a fleet (its devices stay; fleet plans keep their snapshot).
    pub async fn delete_fleet(&self, id: &str) -> StoreResult<()> {
        let deleted = sqlx::query("DELETE FROM fleets WHERE id = $1")
            .bind(id)
            .execute(&self.write)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(not_found("fleet", id));
        }
        Ok(())
    }

    pub async fn fleet_plan(&self, id: &str) -> StoreResult<FleetPlanRow> {
        fleet_plan_on(&mut *self.read.acquire().await?, id).await
    }

    /// A supernet's fleet plans, newest first.
    pub async fn fleet_plans_of(&self, supernet_id: &str) -> StoreResult<Vec<FleetPlanRow>> {
        Ok(
            sqlx::query_as::<_, FleetPlanRow>(sqlx::AssertSqlSafe(format!(
                "{FLEET_PLAN_SELECT} WHERE supernet_id = $1 ORDER BY created_at DESC, id DESC"
            )))
            .bind(supernet_id)
            .fetch_all(&self.read)
            .await?,
        )
    }

    /// Stores a fleet plan as pending, with a snapshot of the fleet and the job that plans it
    /// (`steps` of progress at most); returns both rows as committed.
    pub async fn queue_fleet_plan(
        &self,
        supernet_id: &str,
        fleet_id: &str,
        fleet: &Value,
        options: &str,
        steps: i64,
    ) -> StoreResult<(FleetPlanRow, JobRow)> {
        let id = super::new_id("fleetplan");
        let job_id = super::new_id("job");
        let now = now_ms();
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO fleet_plans (id, supernet_id, fleet_id, fleet, options, status, job_id, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8)",
        )
        .bind(&id)
        .bind(supernet_id)
        .bind(fleet_id)
        .bind(fleet.to_string())
        .bind(options)
        .bind(&job_id)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let job = jobs::insert(
            &mut tx,
            &job_id,
            supernet_id,
            Some(&id),
            &Work::Fleet {},
            steps,
        )
        .await?;
        let plan = fleet_plan_on(&mut tx, &id).await?;
        tx.commit().await?;
        Ok((plan, job))
    }

    /// Stores a fleet plan's finished table, with its job's progress at its end.
    pub async fn store_fleet_result(
        &self,
        id: &str,
        doc: &Value,
        job: super::Held<'_>,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE fleet_plans SET status = 'ready', result = $1, updated_at = $2 WHERE id = $3",
        )
        .bind(doc.to_string())
        .bind(now_ms())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        leases::set_done_all(&mut tx, job).await?;
        tx.commit().await?;
        Ok(())
    }
}
