//! `-p` progress as qemu-img prints it: `    (P/100%)` and a carriage
//! return on stdout, again whenever it has moved by a whole percent, and a
//! last `(100.00/100%)` and newline at the end, so scripts that read
//! qemu-img's progress read ours.

use std::io::Write;

#[derive(Debug)]
pub struct Progress {
    enabled: bool,
    total: u64,
    done: u64,
    last: f64,
    /// For convert: the source's data extents (start, end), with the data
    /// bytes before each, so progress counts data copied, as qemu-img's
    /// does, not the holes passed over.
    data: Option<Vec<(u64, u64, u64)>>,
}

impl Progress {
    /// Progress over `total` units of work (bytes).
    pub fn new(enabled: bool, total: u64) -> Self {
        let p = Self {
            enabled,
            total,
            done: 0,
            last: 0.0,
            data: None,
        };
        p.print(0.0);
        p
    }

    /// Progress over the data `src` holds in `[0, size)`: a position is
    /// worth the data bytes before it.
    pub fn over_data(
        enabled: bool,
        src: &crate::sources::Sources,
        size: u64,
    ) -> std::io::Result<Self> {
        let mut p = Self::new(enabled, 0);
        if !enabled {
            return Ok(p);
        }
        let mut runs = Vec::new();
        let mut before = 0;
        for e in src.map(0, size)?.into_iter().filter(|e| e.data) {
            runs.push((e.start, e.start + e.length, before));
            before += e.length;
        }
        p.total = before;
        p.data = Some(runs);
        Ok(p)
    }

    /// All work before `pos` is done.
    pub fn set_position(&mut self, pos: u64) {
        self.done = match &self.data {
            None => pos,
            Some(runs) => {
                let i = runs.partition_point(|&(start, _, _)| start < pos);
                i.checked_sub(1).map_or(0, |i| {
                    let (start, end, before) = runs[i];
                    before + pos.min(end) - start
                })
            }
        };
        self.update();
    }

    /// `n` more units are done.
    pub fn inc(&mut self, n: u64) {
        self.done += n;
        self.update();
    }

    fn update(&mut self) {
        if self.total == 0 {
            return;
        }
        let now = (100.0 * self.done as f64 / self.total as f64).min(100.0);
        // qemu-img's rule: a step of more than one percent, or the end.
        if now > self.last + 1.0 || self.done >= self.total && self.last < 100.0 {
            self.last = now;
            self.print(now);
        }
    }

    /// `fraction` (0 to 1) of the work is done: printed, as qemu-img's
    /// progress prints, when it has moved a whole percent either way, and
    /// at 0 and 100%.
    pub fn fraction(&mut self, fraction: f64) {
        let now = (100.0 * fraction).clamp(0.0, 100.0);
        #[allow(clippy::float_cmp)] // the ends are exact
        let end = now == 0.0 || now == 100.0;
        if end || now > self.last + 1.0 || now < self.last - 1.0 {
            self.last = now;
            self.print(now);
        }
    }

    /// The end: 100% once more, then the line ends.
    pub fn finish(&self) {
        self.done();
        self.end_line();
    }

    /// 100%, with the line left open (compare says its verdict first).
    pub fn done(&self) {
        self.print(100.0);
    }

    pub fn end_line(&self) {
        if self.enabled {
            println!();
        }
    }

    fn print(&self, percent: f64) {
        if self.enabled {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "    ({percent:.2}/100%)\r");
            let _ = out.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Progress;

    #[test]
    fn data_positions_count_only_data() {
        let mut p = Progress::new(false, 0);
        p.total = 4;
        p.data = Some(vec![(10, 11, 0), (20, 23, 1)]);
        for (pos, done) in [(0, 0), (10, 0), (11, 1), (15, 1), (21, 2), (23, 4), (99, 4)] {
            p.set_position(pos);
            assert_eq!(p.done, done, "at {pos}");
        }
    }
}
