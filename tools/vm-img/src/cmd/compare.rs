//! `vm-img compare`: exit 0 identical, 1 different, 2 cannot open,
//! 3 allocation-check error, 4 read error (qemu-img's codes).

use anyhow::Result;
use vm_image::Extent;

use crate::cli::CompareArgs;
use crate::input::Input;
use crate::progress::Progress;

const CHUNK: u64 = 1 << 20;

pub fn run(a: &CompareArgs) -> Result<i32> {
    let secrets = match crate::secrets::Secrets::parse(&a.objects) {
        Ok(s) => s,
        Err(e) => return Ok(fail(&e, 2)),
    };
    if a.image_opts && (a.format1.is_some() || a.format2.is_some()) {
        return Ok(fail(
            &anyhow::anyhow!("--image-opts and --format are mutually exclusive"),
            2,
        ));
    }
    let open =
        |p, f: &Option<String>| Input::open(p, f.as_deref(), a.image_opts, a.force_share, &secrets);
    let img1 = match open(&a.image1, &a.format1) {
        Ok(i) => i,
        Err(e) => return Ok(fail(&e, 2)),
    };
    let img2 = match open(&a.image2, &a.format2) {
        Ok(i) => i,
        Err(e) => return Ok(fail(&e, 2)),
    };
    let (s1, s2) = (img1.size(), img2.size());
    if a.strict && s1 != s2 {
        say(a, "Strict mode: Image size mismatch!");
        return Ok(1);
    }
    let common = s1.min(s2);
    let mut bar = Progress::new(a.progress, s1.max(s2));
    let mut buf1 = vec![0u8; CHUNK as usize];
    let mut buf2 = vec![0u8; CHUNK as usize];
    let mut pos = 0;
    while pos < common {
        let len = (common - pos).min(CHUNK);
        let (m1, m2) = match (img1.map(pos, len), img2.map(pos, len)) {
            (Ok(m1), Ok(m2)) => (m1, m2),
            (Err(e), _) | (_, Err(e)) => {
                crate::error_line(format_args!(
                    "Error while reading block status at offset {pos}: {e}"
                ));
                return Ok(3);
            }
        };
        if a.strict && allocation(&m1) != allocation(&m2) {
            say(
                a,
                &format!("Strict mode: Offset {pos} block status mismatch!"),
            );
            return Ok(1);
        }
        let zero = |m: &[Extent]| m.iter().all(|e| !e.data);
        if !(zero(&m1) && zero(&m2)) {
            if let Err(e) = img1.read_at(&mut buf1[..len as usize], pos) {
                return Ok(read_error(&a.image1, pos, &e));
            }
            if let Err(e) = img2.read_at(&mut buf2[..len as usize], pos) {
                return Ok(read_error(&a.image2, pos, &e));
            }
            if let Some(i) = first_difference(&buf1[..len as usize], &buf2[..len as usize]) {
                say(
                    a,
                    &format!("Content mismatch at offset {}!", pos + i as u64),
                );
                return Ok(1);
            }
        }
        pos += len;
        bar.set_position(pos);
    }
    // The longer image's tail must read as zeroes.
    let (longer, path) = if s1 > s2 {
        (&img1, &a.image1)
    } else {
        (&img2, &a.image2)
    };
    if s1 != s2 {
        let verdict = tail_zero(longer, path, common, s1.max(s2), &mut buf1);
        // qemu-img says this before reading the tail; its stdout reaches a
        // pipe after its error lines, so a read error comes first here.
        say(a, "Warning: Image size mismatch!");
        match verdict {
            Ok(None) => {}
            Ok(Some(at)) => {
                say(a, &format!("Content mismatch at offset {at}!"));
                return Ok(1);
            }
            Err(code) => return Ok(code),
        }
    }
    // qemu-img's order: 100%, the verdict, then the line's end.
    bar.done();
    say(a, "Images are identical.");
    bar.end_line();
    Ok(0)
}

/// The longer image's tail from `from` to `to`: `Ok(None)` when it reads
/// as zeroes, `Ok(Some(offset))` at the first byte that does not, `Err`
/// with the exit code once a read error is said.
fn tail_zero(
    img: &Input,
    path: &std::path::Path,
    from: u64,
    to: u64,
    buf: &mut [u8],
) -> Result<Option<u64>, i32> {
    let mut pos = from;
    while pos < to {
        let len = (to - pos).min(CHUNK);
        let data = img.map(pos, len).map_or(true, |m| m.iter().any(|e| e.data));
        if data {
            if let Err(e) = img.read_at(&mut buf[..len as usize], pos) {
                return Err(read_error(path, pos, &e));
            }
            if let Some(i) = buf[..len as usize].iter().position(|&b| b != 0) {
                return Ok(Some(pos + i as u64));
            }
        }
        pos += len;
    }
    Ok(None)
}

/// Allocation as strict mode compares it: allocated ranges, by offset.
fn allocation(m: &[Extent]) -> Vec<(u64, u64, bool)> {
    let mut out: Vec<(u64, u64, bool)> = Vec::new();
    for e in m {
        match out.last_mut() {
            Some(last) if last.2 == e.present => last.1 += e.length,
            _ => out.push((e.start, e.length, e.present)),
        }
    }
    out
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    if a == b {
        return None;
    }
    a.iter().zip(b).position(|(x, y)| x != y)
}

fn say(a: &CompareArgs, msg: &str) {
    if !a.quiet {
        println!("{msg}");
    }
}

fn fail(e: &anyhow::Error, code: i32) -> i32 {
    crate::report(e);
    code
}

fn read_error(path: &std::path::Path, pos: u64, e: &std::io::Error) -> i32 {
    crate::error_line(format_args!(
        "Error while reading offset {pos} of {}: {}",
        path.display(),
        vm_spec::text::one_line(e)
    ));
    4
}
