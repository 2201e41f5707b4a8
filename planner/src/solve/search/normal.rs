//! Normal equations of the search's fits: a dense symmetric system solved by Cholesky, with the
//! unknowns kept non-negative by an active set.

/// Solves the normal equations `a x = b` (k × k, row-major) with every unknown kept at zero or
/// above: one the solution drives below zero is pinned at zero and the rest solved again (an
/// active set; a few passes settle it, and what is still negative after them is clamped).
/// `None` when the system is singular from the start.
pub(super) fn solve_non_negative(ata: &[f64], atb: &[f64], k: usize) -> Option<Vec<f64>> {
    let mut theta: Option<Vec<f64>> = None;
    let mut pinned = vec![false; k];
    for _ in 0..8 {
        let (mut a, mut b) = (ata.to_vec(), atb.to_vec());
        for j in (0..k).filter(|&j| pinned[j]) {
            for i in 0..k {
                a[i * k + j] = 0.0;
                a[j * k + i] = 0.0;
            }
            a[j * k + j] = 1.0;
            b[j] = 0.0;
        }
        let Some(solved) = cholesky_solve(&mut a, &mut b, k) else {
            return theta;
        };
        let negative: Vec<usize> = (0..k).filter(|&j| solved[j] < 0.0).collect();
        theta = Some(solved.iter().map(|t| t.max(0.0)).collect());
        if negative.is_empty() {
            break;
        }
        for j in negative {
            pinned[j] = true;
        }
    }
    theta
}

/// Solves `a x = b` for a symmetric positive definite `a` (n × n, row-major), in place.
fn cholesky_solve(a: &mut [f64], b: &mut [f64], n: usize) -> Option<Vec<f64>> {
    for j in 0..n {
        let mut d = a[j * n + j];
        for p in 0..j {
            d -= a[j * n + p] * a[j * n + p];
        }
        if d <= 0.0 || !d.is_finite() {
            return None;
        }
        let d = d.sqrt();
        a[j * n + j] = d;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for p in 0..j {
                s -= a[i * n + p] * a[j * n + p];
            }
            a[i * n + j] = s / d;
        }
    }
    for i in 0..n {
        let mut s = b[i];
        for p in 0..i {
            s -= a[i * n + p] * b[p];
        }
        b[i] = s / a[i * n + i];
    }
    for i in (0..n).rev() {
        let mut s = b[i];
        for p in i + 1..n {
            s -= a[p * n + i] * b[p];
        }
        b[i] = s / a[i * n + i];
    }
    Some(b.to_vec())
}
