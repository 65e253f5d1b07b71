//! Per-(generation, entity, stage) seeds: a pure function of the run seed, so a resumed stage draws
//! exactly what the uninterrupted run drew, whatever ran before it in this process.

/// splitmix64 finaliser.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Seed of `stage` at (`generation`, `entity`); `generation` -1 is the base model.
pub fn derive(seed: u64, stage: &str, generation: i64, entity: u64) -> u64 {
    let mut h = mix(seed);
    for b in stage.bytes() {
        h = mix(h ^ b as u64);
    }
    h = mix(h ^ generation as u64);
    mix(h ^ entity)
}

/// FNV-1a 64 of a byte string, hex: the checksum stored in `DONE` markers (stable across Rust
/// versions, unlike `DefaultHasher`).
pub fn fnv64_hex(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn seeds_differ_by_every_coordinate() {
        let a = derive(1, "train", 0, 0);
        assert_ne!(a, derive(2, "train", 0, 0));
        assert_ne!(a, derive(1, "eval", 0, 0));
        assert_ne!(a, derive(1, "train", 1, 0));
        assert_ne!(a, derive(1, "train", 0, 1));
        assert_eq!(a, derive(1, "train", 0, 0));
    }
}
