//! convert's input: one image, or several read one after another as a
//! single disk (qemu-img's concatenation, `convert a b c out`).

use std::io;

use vm_image::Extent;

use crate::input::Input;

#[derive(Debug)]
pub struct Sources {
    /// Each image with the disk offset where it starts.
    parts: Vec<(u64, Input)>,
    size: u64,
    /// `--salvage`: a sector that cannot be read is warned about and read
    /// as zeroes; a range whose block status fails is read as data.
    salvage: bool,
}

impl Sources {
    pub fn new(images: Vec<Input>) -> Self {
        let mut parts = Vec::with_capacity(images.len());
        let mut size = 0;
        for img in images {
            let len = img.size();
            parts.push((size, img));
            size += len;
        }
        Self {
            parts,
            size,
            salvage: false,
        }
    }

    pub fn set_salvage(&mut self, on: bool) {
        self.salvage = on;
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The first image (the only one unless concatenating).
    pub fn first(&self) -> &Input {
        &self.parts[0].1
    }

    pub fn is_single(&self) -> bool {
        self.parts.len() == 1
    }

    /// The parts overlapping `[pos, pos + len)`: (part's start, image).
    fn overlapping(&self, pos: u64, len: u64) -> impl Iterator<Item = &(u64, Input)> {
        let end = pos.saturating_add(len);
        self.parts
            .iter()
            .filter(move |(start, img)| *start < end && start + img.size() > pos)
    }

    pub fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        match self.read_plain(buf, pos) {
            Err(e) if self.salvage && e.kind() != io::ErrorKind::InvalidInput => {
                self.read_salvaging(buf, pos);
                Ok(())
            }
            r => r,
        }
    }

    /// Sector by sector: what reads is kept, what does not is zeroes, with
    /// qemu-img's warning for each.
    fn read_salvaging(&self, buf: &mut [u8], pos: u64) {
        let mut off = 0usize;
        while off < buf.len() {
            let at = pos + off as u64;
            let n = ((512 - at % 512) as usize).min(buf.len() - off);
            let piece = &mut buf[off..off + n];
            if let Err(e) = self.read_plain(piece, at) {
                crate::error_line(format_args!(
                    "warning: error while reading offset {at}: {}",
                    vm_spec::text::one_line(&e)
                ));
                piece.fill(0);
            }
            off += n;
        }
    }

    fn read_plain(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        let end = pos + buf.len() as u64;
        if end > self.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("read at {pos} + {} is past the end of the input", buf.len()),
            ));
        }
        for (start, img) in self.overlapping(pos, buf.len() as u64) {
            let lo = pos.max(*start);
            let hi = end.min(start + img.size());
            img.read_at(
                &mut buf[(lo - pos) as usize..(hi - pos) as usize],
                lo - start,
            )?;
        }
        Ok(())
    }

    /// How `[pos, pos + len)` is stored, with starts on the joined disk.
    pub fn map(&self, pos: u64, len: u64) -> io::Result<Vec<Extent>> {
        if !self.salvage {
            return self.map_plain(pos, len);
        }
        // As qemu-img: a failed query is retried on a quarter of the range
        // until one sector fails, which is warned about and read as data.
        let end = pos.saturating_add(len).min(self.size);
        let mut out = Vec::new();
        let mut at = pos;
        while at < end {
            let mut n = end - at;
            loop {
                match self.map_plain(at, n) {
                    Ok(extents) => {
                        out.extend(extents);
                        at += n;
                        break;
                    }
                    Err(e) if n <= 512 - at % 512 => {
                        crate::error_line(format_args!(
                            "warning: error while reading block status at offset {at}: {}",
                            vm_spec::text::one_line(&e)
                        ));
                        out.push(Extent::single_layer((at, n), true, true, false, None));
                        at += n;
                        break;
                    }
                    // A quarter, ending on a sector boundary, at least the
                    // rest of this sector; always shorter than before, so
                    // the search ends at one sector.
                    Err(_) => {
                        let sector_end = (at / 512 + 1) * 512;
                        let quarter_end = (at + n.div_ceil(4)).div_ceil(512) * 512;
                        let shorter = quarter_end.max(sector_end) - at;
                        n = if shorter < n {
                            shorter
                        } else {
                            sector_end - at
                        };
                    }
                }
            }
        }
        Ok(out)
    }

    fn map_plain(&self, pos: u64, len: u64) -> io::Result<Vec<Extent>> {
        let end = pos.saturating_add(len).min(self.size);
        let mut out = Vec::new();
        for (start, img) in self.overlapping(pos, len) {
            let lo = pos.max(*start);
            let hi = end.min(start + img.size());
            for mut e in img.map(lo - start, hi - lo)? {
                e.start += start;
                out.push(e);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_maps_cross_the_joins() {
        let d = tempfile::tempdir().unwrap();
        let mut images = Vec::new();
        for (i, len) in [1536u64, 512, 1024].iter().enumerate() {
            let p = d.path().join(format!("{i}.raw"));
            std::fs::write(&p, vec![i as u8 + 1; *len as usize]).unwrap();
            let opts = vm_image::OpenOptions {
                format: Some(vm_image::Format::Raw),
                ..vm_image::OpenOptions::default()
            };
            images.push(Input::Image(vm_image::Image::open(&p, &opts).unwrap()));
        }
        let s = Sources::new(images);
        assert_eq!(s.size(), 3072);
        let mut buf = vec![0u8; 1024];
        s.read_at(&mut buf, 1024).unwrap();
        assert_eq!(&buf[..512], &[1u8; 512][..]);
        assert_eq!(&buf[512..], &[2u8; 512][..]);
        let starts: Vec<u64> = s.map(0, 3072).unwrap().iter().map(|e| e.start).collect();
        assert_eq!(starts.first(), Some(&0));
        assert!(
            starts.contains(&1536) && starts.contains(&2048),
            "{starts:?}"
        );
        assert!(s.read_at(&mut buf, 2560).is_err());
    }

    /// --salvage over a failing block status narrows the failure down to
    /// its sector from any start, aligned or not, and reads the rest.
    #[test]
    fn salvage_narrows_a_failed_block_status_to_its_sector() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("d.raw");
        std::fs::write(&p, vec![7u8; 64 << 10]).unwrap();
        let opts = vm_image::OpenOptions {
            format: Some(vm_image::Format::Raw),
            ..vm_image::OpenOptions::default()
        };
        let mut rules = crate::input::blkdebug::Rules::default();
        let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
        rules
            .add_options(&[
                kv("inject-error.0.event", "none"),
                kv("inject-error.0.iotype", "block-status"),
                kv("inject-error.0.sector", "77"),
            ])
            .unwrap();
        let img = Input::Image(vm_image::Image::open(&p, &opts).unwrap());
        let debug = crate::input::blkdebug::Debug::new(img, rules, "d".into()).unwrap();
        let mut s = Sources::new(vec![Input::Debug(Box::new(debug))]);
        assert!(s.map(0, 64 << 10).is_err());
        s.set_salvage(true);
        for start in [0u64, 1, 511, 777, 39_000] {
            let m = s.map(start, (64 << 10) - start).unwrap();
            let covered: u64 = m.iter().map(|e| e.length).sum();
            assert_eq!(covered, (64 << 10) - start, "from {start}");
            assert!(m.iter().all(|e| e.data), "from {start}: {m:?}");
        }
    }
}
