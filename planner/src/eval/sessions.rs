//! The evaluator's sessions, kept for reuse across candidates: keyed by segment and the bits of
//! the segment's own layers, within a budget on the weight bytes they were given and a count per
//! segment. Past either, the least recently used go first.

use std::collections::HashMap;

/// Weight bytes given to kept sessions before the least recently used are dropped (ONNX Runtime
/// holds about twice this: the values, and its pre-packed copy).
pub(crate) const WEIGHT_BUDGET: usize = 2 << 30;
/// Sessions kept per segment.
pub(crate) const PER_SEGMENT: usize = 32;

#[derive(Debug)]
struct Entry<S> {
    session: S,
    bytes: usize,
    used: u64,
}

#[derive(Debug)]
pub(crate) struct Sessions<S> {
    entries: HashMap<(usize, Vec<u8>), Entry<S>>,
    held: usize,
    budget: usize,
    per_segment: usize,
    clock: u64,
}

impl<S> Sessions<S> {
    pub(crate) fn new(budget: usize, per_segment: usize) -> Self {
        Sessions {
            entries: HashMap::new(),
            held: 0,
            budget,
            per_segment: per_segment.max(1),
            clock: 0,
        }
    }

    pub(crate) fn contains(&self, segment: usize, own: &[u8]) -> bool {
        self.entries.contains_key(&(segment, own.to_vec()))
    }

    /// The session, marked as just used.
    pub(crate) fn get_mut(&mut self, segment: usize, own: &[u8]) -> Option<&mut S> {
        self.clock += 1;
        let entry = self.entries.get_mut(&(segment, own.to_vec()))?;
        entry.used = self.clock;
        Some(&mut entry.session)
    }

    /// Keeps `session` (given `bytes` of weights), first dropping the least recently used until
    /// it fits the budget and its segment's count. A session larger than the whole budget is
    /// still kept, alone.
    pub(crate) fn insert(&mut self, segment: usize, own: &[u8], session: S, bytes: usize) {
        self.remove(segment, own);
        while self.held + bytes > self.budget && !self.entries.is_empty() {
            self.evict(|_| true);
        }
        while self.entries.keys().filter(|k| k.0 == segment).count() >= self.per_segment {
            self.evict(|k| k.0 == segment);
        }
        self.clock += 1;
        self.held += bytes;
        self.entries.insert(
            (segment, own.to_vec()),
            Entry {
                session,
                bytes,
                used: self.clock,
            },
        );
    }

    pub(crate) fn remove(&mut self, segment: usize, own: &[u8]) {
        if let Some(e) = self.entries.remove(&(segment, own.to_vec())) {
            self.held -= e.bytes;
        }
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.held = 0;
    }

    /// Drops the least recently used entry among those `among` accepts.
    fn evict(&mut self, among: impl Fn(&(usize, Vec<u8>)) -> bool) {
        let oldest = self
            .entries
            .iter()
            .filter(|(k, _)| among(k))
            .min_by_key(|(_, e)| e.used)
            .map(|(k, _)| k.clone());
        if let Some(k) = oldest {
            self.remove(k.0, &k.1);
        }
    }

    /// Weight bytes held by kept sessions.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.held
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_go_first_past_the_budget_or_the_segment_count() {
        let mut s = Sessions::new(100, 2);
        s.insert(0, &[1], "a", 40);
        s.insert(1, &[1], "b", 40);
        assert_eq!(s.get_mut(0, &[1]), Some(&mut "a"));
        // 40 + 40 + 30 > 100: b is the least recently used (a was just read).
        s.insert(2, &[1], "c", 30);
        assert!(s.contains(0, &[1]) && !s.contains(1, &[1]) && s.contains(2, &[1]));
        assert_eq!(s.held(), 70);
        // Segment 2 keeps two: the older of its sessions goes, not segment 0's.
        s.insert(2, &[2], "d", 0);
        s.insert(2, &[3], "e", 0);
        assert!(s.contains(0, &[1]) && !s.contains(2, &[1]));
        assert!(s.contains(2, &[2]) && s.contains(2, &[3]));
        assert_eq!((s.len(), s.held()), (3, 40));
        // Larger than the whole budget: kept, alone.
        s.insert(3, &[1], "f", 500);
        assert_eq!((s.len(), s.held()), (1, 500));
        // The same key again replaces it, counted once.
        s.insert(3, &[1], "g", 60);
        assert_eq!((s.len(), s.held()), (1, 60));
        s.remove(3, &[1]);
        assert_eq!((s.len(), s.held()), (0, 0));
    }
}
