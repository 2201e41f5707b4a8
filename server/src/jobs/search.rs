//! The search job: plan, measure, refit, re-plan on a supernet's model and validation set
//! ([`planner::solve::search`]). Each measurement is stored as an evaluation, with the job's
//! progress, as it is made, so a search resumed after a crash (or any later plan, fleet or
//! search) reuses it; what the supernet measured before is given to the search and never
//! measured again. The rounds and the measured front are stored with the search at the end.

use super::{blocking, Ctx, Inputs, JobError, Outcome};
use crate::search::{document, predicted, Measured, Metric, SearchBody, SearchPlan};
use crate::store::{bits_key, Held, NewEvaluation, StoreError};
use planner::eval::{EvalOptions, Evaluator};
use std::collections::HashMap;

pub(super) async fn run(ctx: &Ctx) -> Result<Outcome, JobError> {
    let state = &ctx.state;
    let id = ctx.plan_id()?;
    let row = match state.db.search(&id).await {
        Ok(row) => row,
        Err(StoreError::NotFound { .. }) => {
            return Ok(Outcome::Cancelled("the search was deleted".into()))
        }
        Err(e) => return Err(e.into()),
    };
    // Its result and plan are stored in one transaction, before the job is marked done: a job
    // run again after that (its worker lost between the two) has nothing left to do.
    if row.result.is_some() {
        return Ok(Outcome::Done("the search's result is stored".into()));
    }
    let body: SearchBody = serde_json::from_str(&row.request)
        .map_err(|e| JobError::permanent(format!("stored search request: {e}")))?;
    let inputs = Inputs::load(state, &row.supernet_id).await?;
    let (problem, mut request) = body.prepare(&inputs.manifest)?;
    // Measurements this job made before a restart are in the store and count against its
    // budget. The loop is given them (with all the supernet's others) and measures only new
    // ones; a baseline asks again for its same points, answered from the store.
    let made_before = usize::try_from(ctx.job.progress_done).unwrap_or(0);
    if body.method == crate::search::Method::Search {
        request.evaluations = body.evaluations.saturating_sub(made_before);
    }
    let prior = prior_losses(state, &row.supernet_id, body.metric).await?;
    let mut measurer = StoredMeasure::new(ctx, &row.supernet_id, &prior, body.metric, 0);
    measurer.made = made_before;
    measurer.total = body.evaluations;
    let halt = ctx.halt();
    let options = EvalOptions {
        batch_size: body.batch_size,
        quantize_activations: false,
    };
    let searched = blocking(move || {
        let searched = (|| -> planner::Result<_> {
            let (backend, model, data) = inputs.open()?;
            let mut evaluator = Evaluator::new(&backend, &model, &inputs.manifest, data, options)?;
            request.output = body.output_model(&problem, &mut evaluator, &halt)?;
            let found = body.run(
                &problem,
                &request,
                &prior,
                &mut |c| measurer.measure(&mut evaluator, c),
                &halt,
            )?;
            let predicted = predicted(&problem, &request, &found, &halt)?;
            Ok((found, problem, predicted))
        })();
        measurer.settle(searched)
    })
    .await?;
    // Stopped by the job's halt, or its lease lost: end as the checkpoint says.
    if let Some(o) = ctx.checkpoint() {
        return Ok(o);
    }
    let (found, problem, predicted) = searched?;
    let measured: HashMap<Vec<u8>, Measured> = state
        .db
        .measurements(&row.supernet_id, false)
        .await?
        .iter()
        .filter_map(|m| Some((serde_json::from_str(&m.bits).ok()?, Measured::from(m))))
        .collect();
    let request: SearchBody = serde_json::from_str(&row.request)
        .map_err(|e| JobError::permanent(format!("stored search request: {e}")))?;
    let plan = SearchPlan::new(
        &problem,
        &found,
        &predicted,
        &request,
        &id,
        &row.supernet_id,
    );
    let doc = document(
        &problem,
        &found,
        &measured,
        request.pareto,
        request.method,
        &predicted,
        Some(&plan),
    );
    match state
        .db
        .store_search_result(&id, &doc, &plan.plan, ctx.held())
        .await
    {
        Err(StoreError::NotFound { .. }) => {
            return Ok(Outcome::Cancelled("the search was deleted".into()))
        }
        stored => stored?,
    }
    Ok(Outcome::Done(format!(
        "{} measured ({} reused) in {} rounds; {} on the measured front",
        found.evaluations,
        found.reused,
        found.rounds.len(),
        found.front.len()
    )))
}

/// Every measurement stored for the supernet, as the loss `metric` makes of it (those it cannot
/// read, such as accuracy without labels, left out), in the order of their bits.
pub(super) async fn prior_losses(
    state: &crate::app::AppState,
    supernet_id: &str,
    metric: Metric,
) -> Result<Vec<(Vec<u8>, f64)>, JobError> {
    let stored = state.db.measurements(supernet_id, false).await?;
    let mut prior = Vec::with_capacity(stored.len());
    for m in &stored {
        let bits: Vec<u8> = serde_json::from_str(&m.bits)
            .map_err(|e| JobError::permanent(format!("stored bits {}: {e}", m.bits)))?;
        if let Ok(loss) = metric.loss(&Measured::from(m)) {
            prior.push((bits, loss));
        }
    }
    prior.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(prior)
}

/// A search's measurements inside a job: a configuration stored before answers from the store;
/// a new one is measured, stored with the job's progress (`offset` plus the measurements made,
/// of `offset + total`) in its own transaction, so a job resumed after a crash measures it
/// never again.
pub(super) struct StoredMeasure {
    known: HashMap<Vec<u8>, f64>,
    db: crate::store::Db,
    jobs: std::sync::Arc<crate::app::JobHub>,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    job_id: String,
    owner: String,
    supernet_id: String,
    handle: tokio::runtime::Handle,
    pause: std::time::Duration,
    metric: Metric,
    offset: usize,
    /// New measurements made (by this job, before a restart too).
    pub made: usize,
    /// Measurements the job may make.
    pub total: usize,
    /// The store's fault that stopped the measuring: the search sees a runtime error, the job
    /// this (a database fault is tried again, as anywhere in a job).
    store_error: Option<StoreError>,
}

impl StoredMeasure {
    pub(super) fn new(
        ctx: &Ctx,
        supernet_id: &str,
        prior: &[(Vec<u8>, f64)],
        metric: Metric,
        offset: usize,
    ) -> StoredMeasure {
        let state = &ctx.state;
        StoredMeasure {
            known: prior.iter().cloned().collect(),
            db: state.db.clone(),
            jobs: state.jobs.clone(),
            metrics: state.metrics.clone(),
            job_id: ctx.job.id.clone(),
            owner: ctx.owner.clone(),
            supernet_id: supernet_id.to_string(),
            handle: tokio::runtime::Handle::current(),
            pause: state.config.eval_pause(),
            metric,
            offset,
            made: 0,
            total: 0,
            store_error: None,
        }
    }

    /// What a search measured through this ends in: the store's fault when one stopped it,
    /// otherwise the search's own result.
    pub(super) fn settle<T>(&mut self, searched: planner::Result<T>) -> Result<T, JobError> {
        match self.store_error.take() {
            Some(e) => Err(e.into()),
            None => Ok(searched?),
        }
    }

    /// The loss of `c`: stored, or measured with `evaluator` and stored. Runs on a blocking
    /// thread (it waits on the store).
    pub(super) fn measure<B: planner::eval::Backend + Clone>(
        &mut self,
        evaluator: &mut Evaluator<B>,
        c: &planner::Candidate,
    ) -> planner::Result<f64> {
        if let Some(&loss) = self.known.get(&c.bits) {
            return Ok(loss);
        }
        let started = std::time::Instant::now();
        let m = evaluator.evaluate(&c.bits)?;
        self.metrics.evaluation(started.elapsed().as_secs_f64());
        self.made = (self.made + 1).min(self.total);
        let key = bits_key(&c.bits);
        let evaluation = NewEvaluation {
            supernet_id: &self.supernet_id,
            bits: &key,
            metrics: &m,
        };
        let held = Held {
            id: &self.job_id,
            owner: &self.owner,
        };
        let message = format!("{} of {} measured", self.made, self.total);
        let done = self.offset + self.made;
        if let Err(e) =
            self.handle
                .block_on(self.db.store_evaluation(&evaluation, held, done, &message))
        {
            let message = e.to_string();
            self.store_error = Some(e);
            return Err(planner::Error::Runtime(message));
        }
        self.jobs.changed(&self.job_id);
        if !self.pause.is_zero() {
            std::thread::sleep(self.pause);
        }
        let loss = self
            .metric
            .loss(&Measured::from(&m))
            .map_err(planner::Error::Runtime)?;
        self.known.insert(c.bits.clone(), loss);
        Ok(loss)
    }
}
