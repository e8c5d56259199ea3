//! Group check: an instance whose assignment no longer fits its consumer group rejoins it.
//!
//! In: every `[kafka] group_check_ms`, the group's members as the coordinator describes them
//! (DescribeGroups), this instance's member id and assignment, and the partition counts of
//! the subscribed topics. Out: nothing while the assignment is the one the group's assignor
//! gives this member; when it has differed at two checks in a row with the same members,
//! a rejoin (unsubscribe, subscribe: a new member, so a new generation and a real
//! rebalance), counted in `palisade_group_rejoins_total`.
//!
//! Why: a coordinator must start a rebalance when a member's session expires, so that the
//! survivors take over its partitions. Some Kafka-compatible brokers do not always do so
//! (tansu 0.6 drops the expired member on another member's heartbeat and tells only that
//! member to rejoin, then answers its JoinGroup with the old generation and assignment), and
//! the dead member's partitions would then be read by nobody, silently, for ever. Apache
//! Kafka never leaves a group so; there the check finds nothing to do.
//!
//! The expected assignment is computed, not read: DescribeGroups carries member assignments
//! on Apache Kafka but not on every broker, while the member ids are always there. palisade
//! forces the range assignor (state is partitioned by partition number, see
//! [`super::kafka::consumer_with`]), which sorts the members by id and gives the i-th of
//! `n` members of a topic of `p` partitions the contiguous range starting at
//! `i * (p / n) + min(i, p % n)`, one more partition for the first `p % n` members.
//! Brokers that do not answer DescribeGroups (librdkafka's mock cluster) turn the check off.

use std::collections::BTreeSet;

/// One topic partition.
pub type TopicPartition = (String, i32);

/// The partitions the range assignor gives `me` among `members` (any order), over `topics`
/// (name, partition count), all members subscribed to all topics. Empty when `me` is not a
/// member.
pub fn range_assignment(
    members: &[String],
    me: &str,
    topics: &[(String, i32)],
) -> BTreeSet<TopicPartition> {
    let mut sorted: Vec<&str> = members.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = BTreeSet::new();
    let Some(i) = sorted.iter().position(|m| *m == me) else {
        return out;
    };
    let n = sorted.len() as i32;
    let i = i as i32;
    for (topic, partitions) in topics {
        let (share, extra) = (partitions / n, partitions % n);
        let start = i * share + i.min(extra);
        let len = share + i32::from(i < extra);
        for p in start..start + len {
            out.insert((topic.clone(), p));
        }
    }
    out
}

/// What one check concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The assignment is the one the group should have given (or cannot be judged).
    Fits,
    /// It differs for the first time with these members: maybe a rebalance in progress.
    Suspect,
    /// It has differed at two checks in a row with the same members: rejoin. Carries the
    /// partitions nobody may be reading (expected here, not assigned here).
    Rejoin(BTreeSet<TopicPartition>),
}

/// The check's memory between two rounds.
#[derive(Debug, Default)]
pub struct GroupCheck {
    /// The sorted members of the previous round, when the assignment differed then.
    suspect: Option<Vec<String>>,
}

impl GroupCheck {
    /// Judges one round: `state` is the group state the coordinator reports, `members` its
    /// member ids, `me` this member, `assigned` this member's assignment, `topics` the
    /// subscribed topics with their partition counts.
    pub fn observe(
        &mut self,
        state: &str,
        members: &[String],
        me: &str,
        assigned: &BTreeSet<TopicPartition>,
        topics: &[(String, i32)],
    ) -> Verdict {
        // Only a settled group is judged; one still joining or syncing reassigns anyway.
        if state != "Stable" || me.is_empty() || !members.iter().any(|m| m == me) {
            self.suspect = None;
            return Verdict::Fits;
        }
        let expected = range_assignment(members, me, topics);
        if &expected == assigned {
            self.suspect = None;
            return Verdict::Fits;
        }
        let mut sorted = members.to_vec();
        sorted.sort_unstable();
        if self.suspect.as_ref() == Some(&sorted) {
            self.suspect = None;
            return Verdict::Rejoin(expected.difference(assigned).cloned().collect());
        }
        self.suspect = Some(sorted);
        Verdict::Suspect
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn parts(v: &[(&str, i32)]) -> BTreeSet<TopicPartition> {
        v.iter().map(|(t, p)| (t.to_string(), *p)).collect()
    }

    #[test]
    fn range_gives_contiguous_ranges_extra_partitions_first_and_covers_every_partition() {
        let topics = vec![("a".to_string(), 3), ("b".to_string(), 7)];
        let members = ids(&["m-c", "m-a", "m-b"]);
        // Sorted: m-a, m-b, m-c.
        assert_eq!(
            range_assignment(&members, "m-a", &topics),
            parts(&[("a", 0), ("b", 0), ("b", 1), ("b", 2)])
        );
        assert_eq!(
            range_assignment(&members, "m-b", &topics),
            parts(&[("a", 1), ("b", 3), ("b", 4)])
        );
        assert_eq!(
            range_assignment(&members, "m-c", &topics),
            parts(&[("a", 2), ("b", 5), ("b", 6)])
        );
        // Every member count: the shares are disjoint and cover every partition.
        for n in 1..=9 {
            let members: Vec<String> = (0..n).map(|i| format!("member-{i}")).collect();
            let mut all = BTreeSet::new();
            let mut total = 0;
            for m in &members {
                let mine = range_assignment(&members, m, &topics);
                total += mine.len();
                all.extend(mine);
            }
            assert_eq!(total, 10, "{n} members: shares overlap");
            assert_eq!(all.len(), 10, "{n} members: a partition is nobody's");
        }
        assert!(range_assignment(&members, "stranger", &topics).is_empty());
    }

    /// The case the check exists for: three members, one dies, the coordinator drops it but
    /// the survivors keep their thirds; partition 2 is read by nobody.
    #[test]
    fn a_stale_share_after_a_member_died_rejoins_at_the_second_check() {
        let topics = vec![("city.auth".to_string(), 3)];
        let survivors = ids(&["m-1", "m-2"]);
        let mine = parts(&[("city.auth", 0)]); // m-1's third, from the three-member group
        let mut check = GroupCheck::default();
        assert_eq!(
            check.observe("Stable", &survivors, "m-1", &mine, &topics),
            Verdict::Suspect
        );
        assert_eq!(
            check.observe("Stable", &survivors, "m-1", &mine, &topics),
            Verdict::Rejoin(parts(&[("city.auth", 1)]))
        );
        // The rejoin starts over: the next difference is a suspicion again.
        assert_eq!(
            check.observe("Stable", &survivors, "m-1", &mine, &topics),
            Verdict::Suspect
        );
    }

    #[test]
    fn a_fitting_share_a_rebalance_in_progress_or_changing_members_never_rejoin() {
        let topics = vec![("city.auth".to_string(), 3)];
        let mut check = GroupCheck::default();
        let two = ids(&["m-1", "m-2"]);
        let fits = parts(&[("city.auth", 0), ("city.auth", 1)]);
        for _ in 0..3 {
            assert_eq!(
                check.observe("Stable", &two, "m-1", &fits, &topics),
                Verdict::Fits
            );
        }
        let stale = parts(&[("city.auth", 0)]);
        // Not settled: nothing is judged, and the suspicion does not carry over.
        assert_eq!(
            check.observe("Stable", &two, "m-1", &stale, &topics),
            Verdict::Suspect
        );
        assert_eq!(
            check.observe("PreparingRebalance", &two, "m-1", &stale, &topics),
            Verdict::Fits
        );
        assert_eq!(
            check.observe("Stable", &two, "m-1", &stale, &topics),
            Verdict::Suspect
        );
        // Members changed between the two checks: a new rebalance is under way.
        let three = ids(&["m-1", "m-2", "m-3"]);
        assert_eq!(
            check.observe("Stable", &three, "m-1", &parts(&[]), &topics),
            Verdict::Suspect
        );
        // Not (yet) a member, or no member id: nothing to judge.
        assert_eq!(
            check.observe("Stable", &two, "m-9", &stale, &topics),
            Verdict::Fits
        );
        assert_eq!(
            check.observe("Stable", &two, "", &stale, &topics),
            Verdict::Fits
        );
    }
}
