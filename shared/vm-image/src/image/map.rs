//! `Image::map`: how each range of a chain is stored, qemu-img map's
//! extents (data, zero, which layer, where in its file).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use imago::FormatAccess;

use super::ext_l2::ExtMap;
use super::{Extent, Image, LayerFile};
use crate::block::Block;
use crate::qcow2::header::Header;
use crate::Format;

impl Extent {
    /// An extent of a one-layer disk (depth 0, not compressed): NBD
    /// exports, encrypted images, the null device.
    pub fn single_layer(
        (start, length): (u64, u64),
        present: bool,
        data: bool,
        zero: bool,
        offset: Option<u64>,
    ) -> Self {
        Self {
            start,
            length,
            depth: 0,
            present,
            zero,
            data,
            compressed: false,
            offset,
        }
    }

    /// Appends `e`, or grows the last extent when `e` continues it (same
    /// kind, same layer, host offsets that follow on), as qemu-img map
    /// merges its entries.
    pub fn push_merged(out: &mut Vec<Self>, e: Self) {
        if let Some(last) = out.last_mut() {
            let contiguous = match (last.offset, e.offset) {
                (Some(a), Some(b)) => a + last.length == b,
                (None, None) => true,
                _ => false,
            };
            if last.depth == e.depth
                && last.present == e.present
                && last.zero == e.zero
                && last.data == e.data
                && last.compressed == e.compressed
                && contiguous
            {
                last.length += e.length;
                return;
            }
        }
        out.push(e);
    }
}

impl Image {
    /// How `[start, start + len)` is stored, one extent per run of equal
    /// kind (adjacent data extents merge when their host offsets continue).
    pub fn map(&self, start: u64, len: u64) -> io::Result<Vec<Extent>> {
        let end = start.saturating_add(len).min(self.size());
        let tail = self.tail_extent(start, end);
        let in_file = tail.map_or(end, |t| t.start);
        let mut out: Vec<Extent> = Vec::new();
        let mut pos = start;
        while pos < in_file {
            let e = self.extent_at(pos, in_file - pos)?;
            if e.length == 0 {
                break;
            }
            pos += e.length;
            Extent::push_merged(&mut out, e);
        }
        if let Some(mut t) = tail {
            // Under O_DIRECT, QEMU's block status comes in whole requests:
            // the cut last sector takes the status of what lies before it.
            if let Some(last) = out
                .last()
                .filter(|l| self.direct && l.start + l.length == t.start)
            {
                t.data = last.data;
                t.zero = last.zero;
            }
            Extent::push_merged(&mut out, t);
        }
        Ok(out)
    }

    fn extent_at(&self, pos: u64, max: u64) -> io::Result<Extent> {
        let mut layer: &FormatAccess<LayerFile> = &self.access;
        let mut off = pos;
        let mut max = max;
        let mut depth = 0usize;
        let mk = |depth: usize, length: u64| Extent {
            start: pos,
            length,
            depth: depth as u32,
            present: true,
            zero: false,
            data: false,
            compressed: false,
            offset: None,
        };
        loop {
            let (m, len) = layer.get_shallow_mapping(off, max)?;
            let len = len.min(max);
            match m {
                imago::ShallowMapping::Raw {
                    storage, offset, ..
                } => {
                    // A layer with extended L2 entries: its view says.
                    if let Some(view) = storage.ext_view() {
                        let (kind, run) = view.mapping(offset, len)?;
                        let e = match kind {
                            ExtMap::Data { host } => Extent {
                                data: true,
                                offset: Some(host),
                                ..mk(depth, run)
                            },
                            ExtMap::Zero { host } => Extent {
                                zero: true,
                                offset: host,
                                ..mk(depth, run)
                            },
                            ExtMap::Compressed => Extent {
                                data: true,
                                compressed: true,
                                ..mk(depth, run)
                            },
                            ExtMap::Backing { host } => match view.backing() {
                                Some(b) => {
                                    layer = b;
                                    off = offset;
                                    max = run;
                                    depth += 1;
                                    continue;
                                }
                                None => Extent {
                                    present: false,
                                    zero: true,
                                    offset: host,
                                    ..mk(depth, run)
                                },
                            },
                        };
                        return Ok(e);
                    }
                    let info = &self.layers[depth.min(self.layers.len() - 1)];
                    let in_data_file = info.header.as_ref().is_some_and(Header::has_data_file);
                    if info.format == Format::Raw {
                        let (is_data, run) = data_or_hole(info.file.as_file(), offset, len);
                        return Ok(Extent {
                            zero: !is_data,
                            data: is_data,
                            offset: Some(offset),
                            ..mk(depth, run)
                        });
                    }
                    // A qcow2 data cluster over a hole in its file (as
                    // preallocation leaves them) reads as zeroes: qemu-img
                    // says zero, and still data.
                    // Past the file's end (a file cut short) it stays data,
                    // as qemu-img reports it.
                    let past_end = info.file.size().is_ok_and(|end| offset >= end);
                    let (written, run) = if in_data_file || past_end {
                        (true, len)
                    } else {
                        data_or_hole(info.file.as_file(), offset, len)
                    };
                    return Ok(Extent {
                        zero: !written,
                        data: true,
                        offset: Some(offset),
                        ..mk(depth, run)
                    });
                }
                imago::ShallowMapping::Indirect {
                    layer: l, offset, ..
                } => {
                    layer = l;
                    off = offset;
                    max = len;
                    depth += 1;
                }
                imago::ShallowMapping::Zero { explicit, .. } => {
                    let layer_info = &self.layers[depth.min(self.layers.len() - 1)];
                    let mut run = len;
                    if explicit && layer_info.format == Format::Qcow2 {
                        if let Some((host, left)) = layer_info.zero_host(off) {
                            return Ok(Extent {
                                zero: true,
                                offset: Some(host),
                                ..mk(depth, len.min(left))
                            });
                        }
                        // No host cluster here: the run ends where a zero
                        // cluster that keeps one begins (qemu-img's map
                        // tells the two apart).
                        if let Some(cs) = layer_info.header.as_ref().map(Header::cluster_size) {
                            run = (cs - off % cs).min(len);
                            while run < len && layer_info.zero_host(off + run).is_none() {
                                run = (run + cs).min(len);
                            }
                        }
                    }
                    return Ok(Extent {
                        present: explicit,
                        zero: true,
                        ..mk(depth, run)
                    });
                }
                imago::ShallowMapping::Eof { .. } => {
                    // A backing file shorter than its overlay reads as
                    // zeroes; qemu-img counts them to the layer above it.
                    return Ok(Extent {
                        present: false,
                        zero: true,
                        ..mk(depth.saturating_sub(1), if depth == 0 { 0 } else { max })
                    });
                }
                imago::ShallowMapping::Special { .. } => {
                    return Ok(Extent {
                        data: true,
                        compressed: true,
                        ..mk(depth, len)
                    });
                }
                _ => return Err(io::Error::other("unknown mapping kind")),
            }
        }
    }
}

/// For a file: whether `offset` starts data or a hole, and how long that
/// run is (at most `len`), from SEEK_DATA / SEEK_HOLE. An export's holes
/// are not looked for: all of it is data.
fn data_or_hole(f: Option<&File>, offset: u64, len: u64) -> (bool, u64) {
    let Some(f) = f else {
        return (true, len);
    };
    let fd = f.as_raw_fd();
    let Ok(off) = i64::try_from(offset) else {
        return (true, len);
    };
    // SAFETY: lseek only moves this descriptor's position; no memory is passed.
    let data = unsafe { libc::lseek(fd, off, libc::SEEK_DATA) };
    if data < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            // No data after offset: a hole to the end.
            Some(libc::ENXIO) => (false, len),
            // No SEEK_DATA support (or a device): all data.
            _ => (true, len),
        };
    }
    if data > off {
        return (false, ((data - off) as u64).min(len));
    }
    // SAFETY: as above.
    let hole = unsafe { libc::lseek(fd, off, libc::SEEK_HOLE) };
    if hole <= off {
        return (true, len);
    }
    (true, ((hole - off) as u64).min(len))
}
