//! LUKS1 headers as QEMU writes them (and cryptsetup reads them): the
//! header, eight key slots, each slot's key material split over 4000
//! stripes and encrypted with a key derived from its password.
//!
//! Layout (QEMU's): the header in the first 4 KiB, then each slot's
//! material in its own 4 KiB-aligned region; the payload (for the `luks`
//! format) starts after the last region.

use super::{af, random, Cipher, Error, Hash, SECTOR};

pub const MAGIC: [u8; 6] = *b"LUKS\xba\xbe";
/// The on-disk header, slots included.
pub const HEADER_LEN: usize = 592;
pub const KEY_SLOTS: usize = 8;
pub const STRIPES: u32 = 4000;
const SLOT_ACTIVE: u32 = 0x00AC_71F3;
const SLOT_INACTIVE: u32 = 0x0000_DEAD;
const SALT_LEN: usize = 32;
const DIGEST_LEN: usize = 20;
/// Where the first slot's material goes, and what every region is
/// aligned to (sectors).
const ALIGN_SECTORS: u64 = 4096 / SECTOR as u64;
/// QEMU's (and cryptsetup's) least iteration counts.
const MIN_ITERATIONS: u32 = 1000;
/// The most PBKDF2 iterations a header may ask for: about a minute of
/// hashing here; real headers ask for a few million at most.
pub const MAX_ITERATIONS: u32 = 1 << 27;
/// The largest header area taken (the payload offset of a `luks` file).
pub const MAX_AREA: u64 = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySlot {
    pub active: bool,
    pub iterations: u32,
    pub salt: [u8; SALT_LEN],
    /// In sectors from the start of the header.
    pub material_offset: u32,
    pub stripes: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub cipher_name: String,
    pub cipher_mode: String,
    pub hash: Hash,
    /// In sectors from the start of the header.
    pub payload_offset: u32,
    pub key_bytes: u32,
    pub mk_digest: [u8; DIGEST_LEN],
    pub mk_salt: [u8; SALT_LEN],
    pub mk_iterations: u32,
    pub uuid: String,
    pub slots: Vec<KeySlot>,
}

/// What a new header is made with.
#[derive(Debug, Clone, Copy)]
pub struct CreateOptions {
    /// 32 (aes-128-xts) or 64 (aes-256-xts, QEMU's default).
    pub key_bytes: u32,
    pub hash: Hash,
    /// How long unlocking slot 0 should take (QEMU's `iter-time`).
    pub iter_time_ms: u64,
}

impl Default for CreateOptions {
    fn default() -> Self {
        Self {
            key_bytes: 64,
            hash: Hash::Sha256,
            iter_time_ms: 2000,
        }
    }
}

/// Sectors each slot's material takes, aligned as QEMU aligns it.
fn split_sectors(key_bytes: u32) -> u64 {
    (u64::from(key_bytes) * u64::from(STRIPES))
        .div_ceil(SECTOR as u64)
        .next_multiple_of(ALIGN_SECTORS)
}

/// The bytes a header with this key size takes, material included: a
/// qcow2 image's LUKS area, and a `luks` file's payload offset.
pub fn header_area_len(key_bytes: u32) -> u64 {
    (ALIGN_SECTORS + KEY_SLOTS as u64 * split_sectors(key_bytes)) * SECTOR as u64
}

fn text(field: &[u8], what: &str) -> Result<String, Error> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    std::str::from_utf8(&field[..end])
        .map(str::to_string)
        .map_err(|_| Error::Header(format!("{what} is not text")))
}

fn put_text(out: &mut [u8], s: &str) {
    out[..s.len()].copy_from_slice(s.as_bytes());
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

impl Header {
    /// Parses and checks a header; `area_len` is how many bytes of header
    /// area the container gives it (slots' material must lie inside).
    pub fn parse(b: &[u8], area_len: u64) -> Result<Self, Error> {
        let bad = |m: &str| Error::Header(m.to_string());
        if b.len() < HEADER_LEN || b[..6] != MAGIC {
            return Err(bad("no LUKS magic"));
        }
        if u16::from_be_bytes([b[6], b[7]]) != 1 {
            return Err(Error::Unsupported(
                "LUKS version 2 headers are not supported (version 1 only)".into(),
            ));
        }
        let cipher_name = text(&b[8..40], "cipher name")?;
        let cipher_mode = text(&b[40..72], "cipher mode")?;
        let hash = Hash::parse(&text(&b[72..104], "hash")?)?;
        if cipher_name != "aes" || cipher_mode != "xts-plain64" {
            return Err(Error::Unsupported(format!(
                "cipher {cipher_name}-{cipher_mode} is not supported (aes-xts-plain64 only)"
            )));
        }
        let key_bytes = be32(b, 108);
        if key_bytes != 32 && key_bytes != 64 {
            return Err(bad("key size must be 32 or 64 bytes for aes-xts"));
        }
        let mk_iterations = be32(b, 164);
        if mk_iterations == 0 || mk_iterations > MAX_ITERATIONS {
            return Err(bad("master key digest iterations out of range"));
        }
        let material = u64::from(key_bytes) * u64::from(STRIPES);
        let mut slots = Vec::with_capacity(KEY_SLOTS);
        for i in 0..KEY_SLOTS {
            let s = &b[208 + i * 48..208 + (i + 1) * 48];
            let state = be32(s, 0);
            let slot = KeySlot {
                active: state == SLOT_ACTIVE,
                iterations: be32(s, 4),
                salt: s[8..40].try_into().expect("32 bytes"),
                material_offset: be32(s, 40),
                stripes: be32(s, 44),
            };
            if state != SLOT_ACTIVE && state != SLOT_INACTIVE {
                return Err(Error::Header(format!("key slot {i} has an unknown state")));
            }
            if slot.active {
                let start = u64::from(slot.material_offset) * SECTOR as u64;
                if slot.stripes != STRIPES
                    || slot.iterations == 0
                    || slot.iterations > MAX_ITERATIONS
                    || start < HEADER_LEN as u64
                    || start + material > area_len
                {
                    return Err(Error::Header(format!("key slot {i} is corrupt")));
                }
            }
            slots.push(slot);
        }
        Ok(Self {
            cipher_name,
            cipher_mode,
            hash,
            payload_offset: be32(b, 104),
            key_bytes,
            mk_digest: b[112..132].try_into().expect("20 bytes"),
            mk_salt: b[132..164].try_into().expect("32 bytes"),
            mk_iterations,
            uuid: text(&b[168..208], "uuid")?,
            slots,
        })
    }

    pub fn serialize(&self) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN];
        b[..6].copy_from_slice(&MAGIC);
        b[6..8].copy_from_slice(&1u16.to_be_bytes());
        put_text(&mut b[8..40], &self.cipher_name);
        put_text(&mut b[40..72], &self.cipher_mode);
        put_text(&mut b[72..104], self.hash.name());
        b[104..108].copy_from_slice(&self.payload_offset.to_be_bytes());
        b[108..112].copy_from_slice(&self.key_bytes.to_be_bytes());
        b[112..132].copy_from_slice(&self.mk_digest);
        b[132..164].copy_from_slice(&self.mk_salt);
        b[164..168].copy_from_slice(&self.mk_iterations.to_be_bytes());
        put_text(&mut b[168..208], &self.uuid);
        for (i, s) in self.slots.iter().enumerate() {
            let o = 208 + i * 48;
            let state = if s.active { SLOT_ACTIVE } else { SLOT_INACTIVE };
            b[o..o + 4].copy_from_slice(&state.to_be_bytes());
            b[o + 4..o + 8].copy_from_slice(&s.iterations.to_be_bytes());
            b[o + 8..o + 40].copy_from_slice(&s.salt);
            b[o + 40..o + 44].copy_from_slice(&s.material_offset.to_be_bytes());
            b[o + 44..o + 48].copy_from_slice(&s.stripes.to_be_bytes());
        }
        b
    }

    /// Tries each active slot with `password`; the master key of the
    /// first that opens.
    pub fn unlock(&self, area: &[u8], password: &[u8]) -> Result<Vec<u8>, Error> {
        let n = self.key_bytes as usize;
        for slot in self.slots.iter().filter(|s| s.active) {
            let mut key = vec![0u8; n];
            self.hash
                .pbkdf2(password, &slot.salt, slot.iterations, &mut key);
            let start = slot.material_offset as usize * SECTOR;
            let len = n * STRIPES as usize;
            let mut material = area
                .get(start..start + len)
                .ok_or_else(|| Error::Header("key material past the header area".into()))?
                .to_vec();
            Cipher::xts(&key)?.decrypt(&mut material, 0);
            let mk = af::merge(self.hash, &material, n, STRIPES as usize);
            if self.check_master_key(&mk) {
                return Ok(mk);
            }
        }
        Err(Error::BadPassword)
    }

    fn check_master_key(&self, mk: &[u8]) -> bool {
        let mut d = [0u8; DIGEST_LEN];
        self.hash
            .pbkdf2(mk, &self.mk_salt, self.mk_iterations, &mut d);
        d == self.mk_digest
    }
}

/// A new header area (header and slot 0's material, `header_area_len`
/// bytes) for `password`, and the master key it protects.
pub fn create(password: &[u8], o: CreateOptions) -> Result<(Vec<u8>, Vec<u8>), Error> {
    if o.key_bytes != 32 && o.key_bytes != 64 {
        return Err(Error::Unsupported(
            "aes-xts takes 32 or 64 key bytes (aes-128, aes-256)".into(),
        ));
    }
    let n = o.key_bytes as usize;
    let mut mk = vec![0u8; n];
    random(&mut mk)?;
    let mut mk_salt = [0u8; SALT_LEN];
    random(&mut mk_salt)?;
    // As QEMU and cryptsetup: the digest takes an eighth of the time a
    // slot takes, so that trying all eight slots costs about one slot.
    let per_slot = o.hash.iterations_for(o.iter_time_ms, MIN_ITERATIONS);
    let mk_iterations = (per_slot / 8).max(MIN_ITERATIONS);
    let mut mk_digest = [0u8; DIGEST_LEN];
    o.hash.pbkdf2(&mk, &mk_salt, mk_iterations, &mut mk_digest);

    let split = split_sectors(o.key_bytes);
    let mut slots = Vec::with_capacity(KEY_SLOTS);
    for i in 0..KEY_SLOTS as u64 {
        slots.push(KeySlot {
            active: false,
            iterations: 0,
            salt: [0; SALT_LEN],
            material_offset: (ALIGN_SECTORS + i * split) as u32,
            stripes: STRIPES,
        });
    }
    let area_len = header_area_len(o.key_bytes);
    let mut area = vec![0u8; area_len as usize];
    random(&mut slots[0].salt)?;
    slots[0].active = true;
    slots[0].iterations = per_slot;
    let mut key = vec![0u8; n];
    o.hash.pbkdf2(password, &slots[0].salt, per_slot, &mut key);
    let mut material = af::split(o.hash, &mk, STRIPES as usize, random)?;
    Cipher::xts(&key)?.encrypt(&mut material, 0);
    let at = slots[0].material_offset as usize * SECTOR;
    area[at..at + material.len()].copy_from_slice(&material);

    let header = Header {
        cipher_name: "aes".into(),
        cipher_mode: "xts-plain64".into(),
        hash: o.hash,
        payload_offset: (area_len / SECTOR as u64) as u32,
        key_bytes: o.key_bytes,
        mk_digest,
        mk_salt,
        mk_iterations,
        uuid: uuid::Uuid::new_v4().to_string(),
        slots,
    };
    area[..HEADER_LEN].copy_from_slice(&header.serialize());
    Ok((area, mk))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick() -> CreateOptions {
        CreateOptions {
            iter_time_ms: 1,
            ..CreateOptions::default()
        }
    }

    #[test]
    fn a_new_header_opens_with_its_password_only() {
        let (area, mk) = create(b"hunter2", quick()).unwrap();
        assert_eq!(area.len() as u64, header_area_len(64));
        assert_eq!(area.len(), 2_068_480, "QEMU's layout for aes-256-xts");
        let h = Header::parse(&area, area.len() as u64).unwrap();
        assert_eq!(h.payload_offset, 4040);
        assert_eq!(h.slots.iter().filter(|s| s.active).count(), 1);
        assert_eq!(h.serialize(), area[..HEADER_LEN]);
        assert_eq!(h.unlock(&area, b"hunter2").unwrap(), mk);
        assert!(matches!(
            h.unlock(&area, b"hunter3"),
            Err(Error::BadPassword)
        ));
    }

    #[test]
    fn hostile_headers_are_refused() {
        let (area, _) = create(b"pw", quick()).unwrap();
        let len = area.len() as u64;
        let edit = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut a = area.clone();
            f(&mut a);
            Header::parse(&a, len)
        };
        let be =
            |a: &mut Vec<u8>, at: usize, v: u32| a[at..at + 4].copy_from_slice(&v.to_be_bytes());
        for (what, r) in [
            ("magic", edit(&|a| a[0] = b'X')),
            ("version 2", edit(&|a| a[7] = 2)),
            ("cipher", edit(&|a| a[8..11].copy_from_slice(b"des"))),
            ("key size", edit(&|a| be(a, 108, 48))),
            ("digest iterations", edit(&|a| be(a, 164, u32::MAX))),
            (
                "slot iterations",
                edit(&|a| be(a, 208 + 4, MAX_ITERATIONS + 1)),
            ),
            ("slot stripes", edit(&|a| be(a, 208 + 44, 1))),
            (
                "material past the area",
                edit(&|a| be(a, 208 + 40, u32::MAX)),
            ),
            ("material in the header", edit(&|a| be(a, 208 + 40, 0))),
            ("slot state", edit(&|a| be(a, 208 + 48, 7))),
        ] {
            assert!(r.is_err(), "{what}");
        }
        // Slot 0 is the one active: its material must fit the area.
        assert!(
            Header::parse(&area, 4096 + 64 * 4000 - 1).is_err(),
            "short area"
        );
    }
}
