//! Path planning: the cheapest chain of stream files from what a pool holds to a target version.
//!
//! Nodes are the index's versions plus *empty*; every stream file is an edge (`from` → `to`,
//! a full stream from empty). The start set is empty and every version the pool holds, all at
//! cost zero; the cost of a chain is (bytes to download, steps), compared in that order
//! (Dijkstra with a lexicographic cost). Files given up on (missing, bad hash, failed
//! verification) are left out, so replanning after a failure finds another chain if one exists.

use super::index::{Index, StreamFile};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};

/// One step of a plan.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Step {
    /// The stream file.
    pub file: StreamFile,
}

/// A chain of steps ending at the target.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Plan {
    /// Target version.
    pub target: String,
    /// The version the chain starts from (None: from empty, a full stream first).
    pub start: Option<String>,
    /// Steps in order.
    pub steps: Vec<Step>,
    /// Bytes to fetch: the files of a chain, or the ranges and map of a seeded full.
    pub bytes: u64,
    /// Set when the one step is a seeded full (see [`super::seeded`]): what is fetched by
    /// range and what is found in the pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seeded: Option<super::seeded::SeededSummary>,
}

/// Plans the cheapest chain to version `target` (index position), starting from empty or any
/// of `held` (index positions), leaving out files whose path is in `excluded`. None when no
/// chain exists; an empty plan when the target is held.
#[must_use]
pub fn plan(
    index: &Index,
    held: &HashSet<usize>,
    target: usize,
    excluded: &HashSet<String>,
) -> Option<Plan> {
    let n = index.versions.len();
    if target >= n {
        return None;
    }
    let target_name = index.versions[target].name.clone();
    if held.contains(&target) {
        return Some(Plan {
            target: target_name,
            start: Some(index.versions[target].name.clone()),
            steps: Vec::new(),
            bytes: 0,
            seeded: None,
        });
    }
    let empty = n;
    // Edges by source node.
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); n + 1];
    for (i, s) in index.streams.iter().enumerate() {
        if excluded.contains(&s.path) {
            continue;
        }
        if index.position(&s.to).is_none() {
            continue;
        }
        let from = match &s.from {
            None => empty,
            Some(f) => match index.position(f) {
                Some(p) => p,
                None => continue,
            },
        };
        out[from].push(i);
    }
    let mut dist: Vec<Option<(u64, u32)>> = vec![None; n + 1];
    let mut prev: Vec<Option<usize>> = vec![None; n + 1];
    let mut heap = BinaryHeap::new();
    for s in held.iter().copied().filter(|&h| h < n).chain([empty]) {
        dist[s] = Some((0, 0));
        heap.push(Reverse(((0u64, 0u32), s)));
    }
    while let Some(Reverse((cost, node))) = heap.pop() {
        if dist[node].is_some_and(|d| d < cost) {
            continue;
        }
        if node == target {
            break;
        }
        for &e in &out[node] {
            let s = &index.streams[e];
            let Some(to) = index.position(&s.to) else {
                continue;
            };
            let c = (cost.0.saturating_add(s.size), cost.1 + 1);
            if dist[to].is_none_or(|d| c < d) {
                dist[to] = Some(c);
                prev[to] = Some(e);
                heap.push(Reverse((c, to)));
            }
        }
    }
    dist[target]?;
    let mut steps = Vec::new();
    let mut node = target;
    let mut guard = 0;
    while let Some(e) = prev[node] {
        let s = &index.streams[e];
        steps.push(Step { file: s.clone() });
        node = match &s.from {
            None => empty,
            Some(f) => index.position(f)?,
        };
        if dist[node] == Some((0, 0)) {
            break;
        }
        guard += 1;
        if guard > n + 1 {
            return None;
        }
    }
    steps.reverse();
    // Saturating: sizes come from the index, and a hostile one must not overflow.
    let bytes = steps
        .iter()
        .fold(0u64, |sum, s| sum.saturating_add(s.file.size));
    Some(Plan {
        target: target_name,
        start: steps.first().and_then(|s| s.file.from.clone()),
        steps,
        bytes,
        seeded: None,
    })
}

/// The versions that `publish` makes deltas from for a new version at position `n` (positions
/// `n-1, n-2, n-4, ...`).
#[must_use]
pub fn delta_sources(n: usize) -> Vec<usize> {
    let mut v = Vec::new();
    let mut d = 1usize;
    while d <= n {
        v.push(n - d);
        d = d.saturating_mul(2);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::index::Version;

    /// A repository of `n` versions with fulls of `full` bytes and deltas of `per` bytes per
    /// version of distance (plus `hop` per file).
    fn repo(n: usize, full: u64, per: u64, hop: u64) -> Index {
        let mut idx = Index {
            repository: None,
            serial: 1,
            created: 0,
            expires: u64::MAX,
            versions: Vec::new(),
            streams: Vec::new(),
        };
        for i in 0..n {
            idx.versions.push(Version {
                name: format!("{}", i + 1),
                uuid: format!("00000000-0000-8000-8000-{:012x}", i + 1)
                    .parse()
                    .unwrap(),
                published: 0,
            });
            let mut add = |from: Option<usize>, size: u64| {
                let sha = format!("{:064x}", idx.streams.len() + 1);
                idx.streams.push(StreamFile {
                    path: format!("streams/{sha}.zst"),
                    sha256: sha.parse().unwrap(),
                    size,
                    stream_bytes: size,
                    from: from.map(|f| format!("{}", f + 1)),
                    to: format!("{}", i + 1),
                    map: None,
                });
            };
            add(None, full);
            for s in delta_sources(i) {
                add(Some(s), per * (i - s) as u64 + hop);
            }
        }
        idx
    }

    #[test]
    fn distances() {
        assert_eq!(delta_sources(0), Vec::<usize>::new());
        assert_eq!(delta_sources(1), vec![0]);
        assert_eq!(delta_sources(5), vec![4, 3, 1]);
        assert_eq!(delta_sources(8), vec![7, 6, 4, 0]);
    }

    #[test]
    fn cheapest_and_few_steps() {
        let idx = repo(16, 10_000, 10, 5);
        let none = HashSet::new();
        // From nothing: the newest full.
        let p = plan(&idx, &HashSet::new(), 15, &none).unwrap();
        assert_eq!(p.steps.len(), 1);
        assert_eq!(p.steps[0].file.from, None);
        // From every older version: at most popcount(distance) steps.
        for h in 0..15 {
            let held = HashSet::from([h]);
            let p = plan(&idx, &held, 15, &none).unwrap();
            assert_eq!(p.start.as_deref(), Some(format!("{}", h + 1).as_str()));
            assert!(
                p.steps.len() <= (15 - h).count_ones() as usize,
                "{h}: {:?}",
                p.steps
            );
            // Bytes: the distance times per-version cost plus one hop overhead per step.
            assert_eq!(p.bytes, 10 * (15 - h) as u64 + 5 * p.steps.len() as u64);
        }
        // Held target: nothing to do.
        assert!(
            plan(&idx, &HashSet::from([15]), 15, &none)
                .unwrap()
                .steps
                .is_empty()
        );
    }

    #[test]
    fn replans_around_excluded_files() {
        let idx = repo(8, 10_000, 10, 5);
        let held = HashSet::from([6]);
        let p = plan(&idx, &held, 7, &HashSet::new()).unwrap();
        assert_eq!(p.steps.len(), 1);
        let bad = HashSet::from([p.steps[0].file.path.clone()]);
        let q = plan(&idx, &held, 7, &bad).unwrap();
        assert_ne!(q.steps[0].file.path, p.steps[0].file.path);
        // Everything excluded: no chain.
        let all: HashSet<String> = idx.streams.iter().map(|s| s.path.clone()).collect();
        assert!(plan(&idx, &held, 7, &all).is_none());
    }
}
