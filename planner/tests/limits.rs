//! Work a plan request may ask for is bounded before it starts, and a plan stops when its caller
//! says so: the flag and the deadline of a [`Halt`].

use planner::problem::synth;
use planner::{
    plan, plan_indexed, Budgets, CostKind, Error, Halt, PlanRequest, Problem, Sweep, MAX_POINTS,
    MAX_SOLVES, MAX_SWEEP_POINTS, MAX_TOTAL_STATES,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn refusal(problem: &Problem, request: &PlanRequest) -> Vec<String> {
    match plan(problem, request) {
        Err(Error::Invalid { errors, .. }) => errors
            .iter()
            .map(|f| format!("{} | {}", f.path, f.reason))
            .collect(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn counts_past_their_limits_are_refused_naming_the_field() {
    let p = Problem::new(&synth::resnet18(1), None).unwrap();
    let sweep = |points| PlanRequest {
        sweep: Some(Sweep {
            cost: CostKind::Size,
            points,
        }),
        ..PlanRequest::default()
    };
    assert!(plan(&p, &sweep(MAX_SWEEP_POINTS.min(50))).is_ok());
    assert_eq!(
        refusal(&p, &sweep(MAX_SWEEP_POINTS + 1)),
        vec![format!("sweep.points | must be at most {MAX_SWEEP_POINTS}")]
    );
    let front = PlanRequest {
        pareto: Some(CostKind::Size),
        points: Some(MAX_POINTS + 1),
        ..PlanRequest::default()
    };
    assert_eq!(
        refusal(&p, &front),
        vec![format!("points | must be at most {MAX_POINTS}")]
    );
}

#[test]
fn a_paper_pool_needing_too_many_solves_is_refused_before_any_runs() {
    // 2,400 layers of six bit-widths, some tied or pinned: one solve per forced choice.
    let p = Problem::new(&synth::random(2400, 7), None).unwrap();
    let request = PlanRequest {
        paper_pool: true,
        budgets: Budgets {
            max_avg_bits: Some(5.0),
            ..Budgets::default()
        },
        ..PlanRequest::default()
    };
    let forced: usize = p.groups.iter().map(|g| g.choices.len() - 1).sum();
    assert_eq!(request.solves(&p), 1 + forced);
    assert!(forced > MAX_SOLVES, "{forced}");
    let started = Instant::now();
    let errors = refusal(&p, &request);
    assert_eq!(
        errors,
        vec![format!(
            "paper_pool | the plan would need {} solves, more than the {MAX_SOLVES} a plan may run",
            1 + forced
        )]
    );
    eprintln!("refused in {:?}", started.elapsed());
}

/// A paper pool on 1,000 layers: 5,000 solves, far more work than the flag leaves it.
fn long_pool() -> (Problem, PlanRequest) {
    let p = Problem::new(&synth::random(1000, 3), None).unwrap();
    let request = PlanRequest {
        paper_pool: true,
        budgets: Budgets {
            max_avg_bits: Some(5.0),
            ..Budgets::default()
        },
        ..PlanRequest::default()
    };
    (p, request)
}

#[test]
fn a_raised_flag_stops_a_plan_between_solves() {
    let (p, request) = long_pool();
    let flag = Arc::new(AtomicBool::new(false));
    let raiser = {
        let flag = flag.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            flag.store(true, Ordering::Relaxed);
        })
    };
    let halt = Halt::new(flag, None);
    let e = plan_indexed(&p, &request, None, &halt).unwrap_err();
    raiser.join().unwrap();
    assert!(matches!(e, Error::Stopped(_)), "{e}");
    assert!(e.to_string().contains("cancelled"), "{e}");
}

#[test]
fn a_passed_deadline_stops_a_plan_and_a_front() {
    let (p, request) = long_pool();
    let halt = Halt::new(
        Arc::default(),
        Some(Instant::now() + Duration::from_millis(200)),
    );
    let e = plan_indexed(&p, &request, None, &halt).unwrap_err();
    assert!(e.to_string().contains("deadline"), "{e}");
    // The exact front checks once per group: a deadline already passed stops it at the first.
    let front = PlanRequest {
        pareto: Some(CostKind::Size),
        ..PlanRequest::default()
    };
    let r18 = Problem::new(&synth::resnet18(1), None).unwrap();
    let past = Halt::new(Arc::default(), Some(Instant::now()));
    let e = plan_indexed(&r18, &front, None, &past).unwrap_err();
    assert!(matches!(e, Error::Stopped(_)), "{e}");
    assert!(plan_indexed(&r18, &front, None, &Halt::default()).is_ok());
}

#[test]
fn a_front_holding_too_many_states_is_refused() {
    // 3,000 groups: the exact front's partial states pass their bound long before it ends.
    let p = Problem::new(&synth::random(3000, 5), None).unwrap();
    let front = PlanRequest {
        pareto: Some(CostKind::Size),
        ..PlanRequest::default()
    };
    let e = plan(&p, &front).unwrap_err();
    assert!(matches!(e, Error::TooLarge(_)), "{e}");
    assert!(
        e.to_string().contains(&format!(
            "holds more than {MAX_TOTAL_STATES} partial states in all"
        )),
        "{e}"
    );
}
