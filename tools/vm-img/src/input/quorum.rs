//! QEMU's quorum driver, for the reading commands: one disk read from
//! several copies (`driver=quorum,vote-threshold=N,children.0...`), each
//! read answered by the content at least N children agree on, as QEMU
//! votes. Block status is QEMU's too: zero where every child says zero,
//! data (with no host offset) where any says data. Nothing is written, so
//! `rewrite-corrupted` and `blkverify` are refused.

use std::io;

use anyhow::{bail, Result};
use vm_image::Extent;

use super::Input;

#[derive(Debug)]
pub struct Quorum {
    children: Vec<Input>,
    threshold: usize,
    /// `read-pattern=fifo`: the first child that reads is the answer.
    fifo: bool,
}

/// What the quorum options say, before the children are opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub threshold: usize,
    pub fifo: bool,
}

impl Settings {
    /// The quorum driver's own options (`children.N.*` taken out).
    pub fn parse(text: &str, opts: &[(String, String)]) -> Result<Self> {
        let mut threshold = None;
        let mut fifo = false;
        let on = |v: &str| matches!(v, "on" | "true" | "yes");
        for (k, v) in opts {
            match k.as_str() {
                "vote-threshold" => {
                    threshold =
                        Some(v.parse::<usize>().ok().filter(|&t| t > 0).ok_or_else(|| {
                            anyhow::anyhow!("'{text}': vote-threshold must be a positive number")
                        })?);
                }
                "read-pattern" => {
                    fifo = match v.as_str() {
                        "quorum" => false,
                        "fifo" => true,
                        _ => bail!("'{text}': read-pattern must be quorum or fifo"),
                    };
                }
                "rewrite-corrupted" | "blkverify" if on(v) => {
                    bail!("'{text}': quorum's {k} is not supported (vm-img reads only)")
                }
                "rewrite-corrupted" | "blkverify" | "node-name" | "read-only" => {}
                other => bail!("'{text}': option '{other}' is not supported for quorum"),
            }
        }
        let Some(threshold) = threshold else {
            bail!("'{text}': Parameter 'vote-threshold' is missing");
        };
        Ok(Self { threshold, fifo })
    }
}

impl Quorum {
    pub fn new(text: &str, children: Vec<Input>, s: &Settings) -> Result<Self> {
        if children.is_empty() {
            bail!("'{text}': quorum needs at least one child");
        }
        if s.threshold > children.len() {
            bail!("'{text}': threshold may not exceed children count");
        }
        if children.iter().any(|c| c.size() != children[0].size()) {
            bail!("'{text}': quorum's children differ in size");
        }
        Ok(Self {
            children,
            threshold: s.threshold,
            fifo: s.fifo,
        })
    }

    pub fn size(&self) -> u64 {
        self.children[0].size()
    }

    pub fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        if self.fifo {
            let mut last = None;
            for c in &self.children {
                match c.read_at(buf, pos) {
                    Ok(()) => return Ok(()),
                    Err(e) => last = Some(e),
                }
            }
            return Err(last.unwrap_or_else(|| io::Error::other("quorum: no child")));
        }
        // Each distinct content read, with how many children read it.
        let mut versions: Vec<(Vec<u8>, usize)> = Vec::new();
        for c in &self.children {
            let mut got = vec![0u8; buf.len()];
            // A child that fails to read casts no vote, as in QEMU.
            if c.read_at(&mut got, pos).is_err() {
                continue;
            }
            match versions.iter_mut().find(|(v, _)| *v == got) {
                Some((_, n)) => *n += 1,
                None => versions.push((got, 1)),
            }
        }
        match versions.into_iter().max_by_key(|(_, n)| *n) {
            Some((winner, n)) if n >= self.threshold => {
                buf.copy_from_slice(&winner);
                Ok(())
            }
            _ => Err(io::Error::other(
                "Input/output error (quorum: fewer children than the vote threshold agree)",
            )),
        }
    }

    /// QEMU's quorum block status: zero for as long as every child that
    /// answers says zero, else data for as long as the longest data run.
    pub fn map(&self, start: u64, len: u64) -> io::Result<Vec<Extent>> {
        let end = start.saturating_add(len).min(self.size());
        let mut out = Vec::new();
        let mut pos = start;
        while pos < end {
            let (mut zero_run, mut data_run, mut answered) = (u64::MAX, 0u64, false);
            for c in &self.children {
                let Ok(first) = c.map(pos, end - pos).map(|m| m.first().copied()) else {
                    continue;
                };
                let Some(e) = first.filter(|e| e.length > 0) else {
                    continue;
                };
                answered = true;
                if e.zero {
                    zero_run = zero_run.min(e.length);
                } else {
                    data_run = data_run.max(e.length);
                }
            }
            if !answered {
                return Err(io::Error::other("quorum: no child gives the block status"));
            }
            let data = data_run > 0;
            let length = if data { data_run } else { zero_run }.min(end - pos);
            Extent::push_merged(
                &mut out,
                Extent::single_layer((pos, length), true, data, !data, None),
            );
            pos += length;
        }
        Ok(out)
    }
}
