//! Replica placement: which nodes hold each new partition.

use std::collections::BTreeMap;

/// Placement cannot satisfy the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// Fewer nodes than the replication factor.
    #[error(
        "replication factor {replication_factor} needs that many nodes, the cluster has {nodes}"
    )]
    NotEnoughNodes {
        /// Requested replication factor.
        replication_factor: usize,
        /// Nodes available.
        nodes: usize,
    },
    /// A replication factor of zero.
    #[error("replication factor must be at least 1")]
    ZeroReplicationFactor,
}

/// Chooses replicas for `count` new partitions with `replication_factor` replicas each, among
/// `nodes` (sorted, distinct), given how many replicas and preferred leaderships each node
/// already has and each node's rack (`racks`; a node not in it, or with an empty rack, is a rack
/// of its own). Each partition's replicas are distinct, on distinct racks where there are enough
/// racks; its first replica is its preferred leader. Nodes with the fewest replicas are chosen
/// first (then fewest leaderships, then lowest id), so replicas and leaders stay spread as
/// topics come and go. Deterministic.
pub fn place(
    nodes: &[u64],
    racks: &BTreeMap<u64, String>,
    existing: &BTreeMap<u64, (usize, usize)>,
    count: usize,
    replication_factor: usize,
) -> Result<Vec<Vec<u64>>, PlacementError> {
    if replication_factor == 0 {
        return Err(PlacementError::ZeroReplicationFactor);
    }
    if nodes.len() < replication_factor {
        return Err(PlacementError::NotEnoughNodes {
            replication_factor,
            nodes: nodes.len(),
        });
    }
    // (replicas, leaderships) per node, including what this call places.
    let mut load: BTreeMap<u64, (usize, usize)> = nodes
        .iter()
        .map(|node| (*node, existing.get(node).copied().unwrap_or((0, 0))))
        .collect();
    let mut placed = Vec::with_capacity(count);
    for _ in 0..count {
        // The leader: fewest leaderships, then fewest replicas, then lowest id.
        let leader = *load
            .iter()
            .min_by_key(|(node, (replicas, leaders))| (*leaders, *replicas, **node))
            .map(|(node, _)| node)
            .expect("at least replication_factor >= 1 nodes");
        let mut replicas = vec![leader];
        while replicas.len() < replication_factor {
            let next = *load
                .iter()
                .filter(|(node, _)| !replicas.contains(node))
                .min_by_key(|(node, (count, _))| {
                    (shares_rack(racks, &replicas, **node), *count, **node)
                })
                .map(|(node, _)| node)
                .expect("enough nodes were checked");
            replicas.push(next);
        }
        for node in &replicas {
            load.get_mut(node).expect("placed on a known node").0 += 1;
        }
        load.get_mut(&leader).expect("placed on a known node").1 += 1;
        placed.push(replicas);
    }
    Ok(placed)
}

/// Whether `node` is on the rack of one of `replicas` (an empty or unknown rack is nobody's).
pub(crate) fn shares_rack(racks: &BTreeMap<u64, String>, replicas: &[u64], node: u64) -> bool {
    match racks.get(&node).filter(|rack| !rack.is_empty()) {
        None => false,
        Some(rack) => replicas.iter().any(|r| racks.get(r) == Some(rack)),
    }
}

/// The node that takes the place of a replica leaving `replicas` (which no longer lists it):
/// among `nodes` not in `replicas`, one on a rack none of them is on if there is one, then the
/// one with the fewest replicas (`load`), then the lowest id. `None` if every node holds one.
pub fn replacement(
    nodes: &[u64],
    racks: &BTreeMap<u64, String>,
    load: &BTreeMap<u64, (usize, usize)>,
    replicas: &[u64],
) -> Option<u64> {
    nodes
        .iter()
        .copied()
        .filter(|node| !replicas.contains(node))
        .min_by_key(|node| {
            (
                shares_rack(racks, replicas, *node),
                load.get(node).map_or(0, |(count, _)| *count),
                *node,
            )
        })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn three_nodes_rf3_spreads_leaders() {
        let placed = place(&[1, 2, 3], &BTreeMap::new(), &BTreeMap::new(), 6, 3).unwrap();
        let leaders: Vec<u64> = placed.iter().map(|r| r[0]).collect();
        assert_eq!(leaders, [1, 2, 3, 1, 2, 3]);
        for replicas in &placed {
            let mut sorted = replicas.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, [1, 2, 3]);
        }
    }

    #[test]
    fn refuses_what_it_cannot_place() {
        assert_eq!(
            place(&[1, 2], &BTreeMap::new(), &BTreeMap::new(), 1, 3),
            Err(PlacementError::NotEnoughNodes {
                replication_factor: 3,
                nodes: 2
            })
        );
        assert_eq!(
            place(&[1], &BTreeMap::new(), &BTreeMap::new(), 1, 0),
            Err(PlacementError::ZeroReplicationFactor)
        );
    }

    #[test]
    fn replicas_go_to_distinct_racks_when_there_are_enough() {
        // Six nodes on three racks, the two of each rack numbered next to each other: without
        // racks, RF 3 would put partitions on 1, 2, 3 (two of them on rack a).
        let racks: BTreeMap<u64, String> = (1..=6u64)
            .map(|id| (id, ["a", "b", "c"][((id - 1) / 2) as usize].to_string()))
            .collect();
        let placed = place(&[1, 2, 3, 4, 5, 6], &racks, &BTreeMap::new(), 12, 3).unwrap();
        for replicas in &placed {
            let mut on: Vec<&String> = replicas.iter().map(|r| &racks[r]).collect();
            on.sort();
            on.dedup();
            assert_eq!(on.len(), 3, "{replicas:?} shares a rack");
        }
        // Two racks for RF 3: two replicas share one, the third is on the other.
        let two: BTreeMap<u64, String> = racks
            .keys()
            .map(|id| (*id, if *id <= 3 { "a" } else { "b" }.to_string()))
            .collect();
        for replicas in place(&[1, 2, 3, 4, 5, 6], &two, &BTreeMap::new(), 6, 3).unwrap() {
            assert!(
                replicas.iter().any(|r| two[r] == "a") && replicas.iter().any(|r| two[r] == "b")
            );
        }
        // A replacement prefers a rack the others are not on, then the least loaded node.
        let load = BTreeMap::from([(4, (5, 0)), (5, (1, 0)), (6, (0, 0))]);
        assert_eq!(
            replacement(&[1, 2, 3, 4, 5, 6], &racks, &load, &[1, 3]),
            Some(6)
        );
        assert_eq!(
            replacement(&[1, 2, 3], &BTreeMap::new(), &load, &[1, 2, 3]),
            None
        );
    }

    proptest! {
        /// Replicas are distinct, and no node holds more than one replica or one leadership more
        /// than any other after placing on an empty cluster.
        #[test]
        fn placement_is_even(nodes in 1usize..8, count in 0usize..50, rf in 1usize..4) {
            prop_assume!(rf <= nodes);
            let ids: Vec<u64> = (1..=nodes as u64).collect();
            let placed = place(&ids, &BTreeMap::new(), &BTreeMap::new(), count, rf).unwrap();
            let mut replicas = BTreeMap::new();
            let mut leaders = BTreeMap::new();
            for partition in &placed {
                let mut distinct = partition.clone();
                distinct.sort_unstable();
                distinct.dedup();
                prop_assert_eq!(distinct.len(), rf);
                for node in partition {
                    *replicas.entry(*node).or_insert(0usize) += 1;
                }
                *leaders.entry(partition[0]).or_insert(0usize) += 1;
            }
            let spread = |counts: &BTreeMap<u64, usize>| {
                let values: Vec<usize> = ids.iter().map(|n| counts.get(n).copied().unwrap_or(0)).collect();
                values.iter().max().unwrap() - values.iter().min().unwrap()
            };
            prop_assert!(spread(&replicas) <= 1, "replicas {:?}", replicas);
            prop_assert!(spread(&leaders) <= 1, "leaders {:?}", leaders);
        }
    }
}
