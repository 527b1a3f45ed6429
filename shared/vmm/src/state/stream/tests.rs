use super::*;

fn sample() -> Vec<u8> {
    let mut w = Writer::new(Vec::new()).unwrap();
    w.hello(&Hello {
        spec: serde_json::json!({"name": "a"}),
        cpuid: vec![],
        disks: vec![],
        streams: 1,
        token: String::new(),
    })
    .unwrap();
    w.pages(0x1000, &[7u8; 8192]).unwrap();
    w.zeroes(0x4000, 3).unwrap();
    w.disk(0, 512, &[9u8; 1024]).unwrap();
    w.disk_zeroes(0, 4096, 1 << 20).unwrap();
    w.state(b"{}").unwrap();
    w.end(&End {
        page_records: 1,
        rounds: 1,
        disk_records: 2,
    })
    .unwrap();
    w.w
}

#[test]
fn records_round_trip() {
    let s = sample();
    let mut r = Reader::new(&s[..]).unwrap();
    assert!(matches!(r.next_record().unwrap(), Record::Hello(_)));
    match r.next_record().unwrap() {
        Record::Pages { gpa, data } => assert_eq!((gpa, data.len()), (0x1000, 8192)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        r.next_record().unwrap(),
        Record::Zeroes {
            gpa: 0x4000,
            pages: 3
        }
    ));
    match r.next_record().unwrap() {
        Record::Disk { disk, offset, data } => {
            assert_eq!((disk, offset, data.len()), (0, 512, 1024));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        r.next_record().unwrap(),
        Record::DiskZeroes {
            disk: 0,
            offset: 4096,
            len: 0x10_0000
        }
    ));
    assert!(matches!(r.next_record().unwrap(), Record::State(_)));
    assert!(matches!(r.next_record().unwrap(), Record::End(_)));
    assert_eq!(r.bytes, s.len() as u64);
}

/// Reads a stream to its end with pages placed in `mem`; the bytes
/// placed in records with no torn page, and the torn pages.
fn read_placed(d: &[u8], mem: &mut [u8]) -> Result<(u64, Vec<u64>)> {
    let base = mem.as_mut_ptr();
    let size = mem.len();
    let mut r = Reader::new(d)?;
    let (mut placed, mut torn) = (0, Vec::new());
    loop {
        let rec = r.next_record_into(&mut |gpa, len| {
            assert!(gpa as usize + len <= size);
            // SAFETY: within `mem`, which outlives the reader and is
            // not touched elsewhere meanwhile; one slice at a time.
            Ok(Some(unsafe {
                std::slice::from_raw_parts_mut(base.add(gpa as usize), len)
            }))
        })?;
        match rec {
            Record::PagesPlaced { len, .. } => placed += len,
            Record::PagesTorn { torn: t, .. } => torn.extend(t),
            Record::End(_) => return Ok((placed, torn)),
            _ => {}
        }
    }
}

#[test]
fn placed_pages_are_checked_too() {
    let s = sample();
    let mut mem = vec![0u8; 0x10000];
    assert_eq!(read_placed(&s, &mut mem).unwrap(), (8192, vec![]));
    assert!(mem[0x1000..0x3000].iter().all(|&b| b == 7));
    // A flipped bit in the second page's placed data (after the hello,
    // the page record's head, its address and two sums) is caught once
    // it has landed: that page is torn, with its address still sure.
    let hello_end = 16 + 16 + u64::from_le_bytes(s[24..32].try_into().unwrap()) as usize;
    let mut d = s.clone();
    d[hello_end + 16 + 16 + 4096 + 100] ^= 1;
    assert_eq!(read_placed(&d, &mut mem).unwrap(), (0, vec![0x2000]));
    // Read without a place, the same record is refused.
    let mut r = Reader::new(&d[..]).unwrap();
    r.next_record().unwrap();
    assert!(matches!(r.next_record(), Err(Error::Stream(m)) if m.contains("checksum")));
    // A flipped bit in its address is refused before anything lands.
    let mut d = s.clone();
    d[hello_end + 16 + 1] ^= 1;
    let mut r = Reader::new(&d[..]).unwrap();
    r.next_record().unwrap();
    let rec = r.next_record_into(&mut |_, _| panic!("placed a record whose head is damaged"));
    assert!(matches!(rec, Err(Error::Stream(m)) if m.contains("checksum")));
}

#[test]
fn damaged_streams_are_refused() {
    let s = sample();
    let empty = Reader::new(&[][..]).err().unwrap().to_string();
    assert!(empty.contains("nothing arrived"), "{empty}");
    let short = Reader::new(&s[..5]).err().unwrap().to_string();
    assert!(short.contains("cut short in the header"), "{short}");
    // Every cut is an error, never a panic or a wrong record.
    for cut in 0..s.len() {
        let Ok(mut r) = Reader::new(&s[..cut]) else {
            continue;
        };
        while let Ok(rec) = r.next_record() {
            assert!(
                !matches!(rec, Record::End(_)),
                "cut at {cut} read to the end"
            );
        }
    }
    // Each flipped bit in the records is caught (the header's magic and
    // version too, or the record's kind or length).
    for bit in 0..s.len() * 8 {
        let mut d = s.clone();
        d[bit / 8] ^= 1 << (bit % 8);
        let ok = Reader::new(&d[..])
            .and_then(|mut r| (0..7).try_for_each(|_| r.next_record().map(|_| ())));
        // The reserved header word is not checked; all else is.
        if !(8 * 12..8 * 16).contains(&bit) {
            assert!(ok.is_err(), "flipped bit {bit} went unnoticed");
        }
    }
    let mut future = s.clone();
    future[8] = 3;
    assert!(matches!(
        Reader::new(&future[..]),
        Err(Error::StreamVersion(3))
    ));
    // Version 1 page records had one checksum over address and data.
    let mut old = s.clone();
    old[8] = 1;
    assert!(matches!(Reader::new(&old[..]), Err(Error::Stream(m)) if m.contains("older")));
}

#[test]
fn a_further_stream_opens_with_its_join() {
    let mut w = Writer::new(Vec::new()).unwrap();
    let j = Join {
        token: "ab12".into(),
        stream: 3,
    };
    w.join(&j).unwrap();
    let mut r = Reader::new(&w.w[..]).unwrap();
    match r.next_record().unwrap() {
        Record::Join(got) => assert_eq!(got, j),
        other => panic!("{other:?}"),
    }
    // A one-stream hello says nothing of streams; a hello for several
    // says how many, and its token.
    let mut h = Hello {
        spec: serde_json::json!({}),
        cpuid: vec![],
        disks: vec![],
        streams: 1,
        token: String::new(),
    };
    let one = serde_json::to_string(&h).unwrap();
    assert!(!one.contains("streams") && !one.contains("token"), "{one}");
    h.streams = 2;
    h.token = "ab12".into();
    let two: Hello = serde_json::from_str(&serde_json::to_string(&h).unwrap()).unwrap();
    assert_eq!((two.streams, two.token.as_str()), (2, "ab12"));
    let old: Hello = serde_json::from_str(&one).unwrap();
    assert_eq!(old.streams, 1);
}

#[test]
fn chunks_name_their_stream() {
    assert_eq!(stream_of(0, 4096, 2), Some(0));
    assert_eq!(stream_of(CHUNK, CHUNK, 2), Some(1));
    assert_eq!(stream_of(3 * CHUNK + 4096, 8192, 2), Some(1));
    assert_eq!(stream_of(4 * CHUNK - 4096, 4096, 3), Some(0));
    // Across a chunk's end, or past the end of addresses: no stream.
    assert_eq!(stream_of(CHUNK - 4096, 8192, 2), None);
    assert_eq!(stream_of(u64::MAX - 4095, 8192, 2), None);
    assert_eq!(stream_of(5 * CHUNK, 4096, 1), Some(0));
}

#[test]
fn an_abort_says_why_the_source_gave_up() {
    let mut writer = Writer::new(Vec::new()).unwrap();
    writer.pages(0x1000, &[7u8; 4096]).unwrap();
    writer.abort("cancelled\n\x1b[2Jby the user").unwrap();
    let sent = writer.w;
    let mut reader = Reader::new(&sent[..]).unwrap();
    assert!(matches!(
        reader.next_record().unwrap(),
        Record::Pages { .. }
    ));
    let e = reader.next_record().unwrap_err().to_string();
    // Control characters from the wire never reach a terminal.
    assert_eq!(
        e,
        "the source ended the migration: cancelled  [2Jby the user"
    );
    // A long reason is cut on a character's boundary.
    let mut writer = Writer::new(Vec::new()).unwrap();
    writer.abort(&"é".repeat(MAX_ABORT_REASON)).unwrap();
    let sent = writer.w;
    match Reader::new(&sent[..]).unwrap().next_record() {
        Err(Error::SourceGaveUp(why)) => {
            assert_eq!(why.chars().count(), MAX_ABORT_REASON / 2);
        }
        other => panic!("{other:?}"),
    }
    // One that a writer would not make (too long) is a damaged stream.
    let mut sent = Writer::new(Vec::new()).unwrap().w;
    let reason = vec![b'x'; MAX_ABORT_REASON + 1];
    let mut head = [0u8; 16];
    head[0..4].copy_from_slice(&(Kind::Abort as u32).to_le_bytes());
    head[8..16].copy_from_slice(&(reason.len() as u64).to_le_bytes());
    let crc = record_crc(&head, &[&reason]);
    head[4..8].copy_from_slice(&crc.to_le_bytes());
    sent.extend_from_slice(&head);
    sent.extend_from_slice(&reason);
    let e = Reader::new(&sent[..]).unwrap().next_record().unwrap_err();
    assert!(
        matches!(e, Error::Stream(ref m) if m.contains("abort record too long")),
        "{e}"
    );
}
