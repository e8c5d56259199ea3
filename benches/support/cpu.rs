//! CPU time for benches on a shared machine, where wall time also counts the other
//! processes' turns on the cores.

use std::time::Duration;

/// CPU time of this process (user + system), from `/proc/self/stat` (Linux; zero elsewhere),
/// in clock ticks of 10 ms.
pub fn cpu_time() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // The fields after the command name (in parentheses, which may hold spaces).
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}
