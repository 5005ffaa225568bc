//! Property test over untrusted input: tens of thousands of mutated
//! `config.json` documents and seccomp profiles must be accepted or refused
//! with an error, never panic. Runs in CI, bounded in time, no root needed.

use std::time::{Duration, Instant};

use berth_runtime::seccomp;
use berth_runtime::spec::Spec;
use serde_json::{json, Value};

/// xorshift64*: deterministic, so a failure names a reproducible seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn random_value(rng: &mut Rng, depth: u32) -> Value {
    match rng.below(if depth > 2 { 6 } else { 8 }) {
        0 => Value::Null,
        1 => json!(rng.below(2) == 0),
        2 => json!(rng.next() as i64),
        3 => [
            json!(-1),
            json!(0),
            json!(1),
            json!(65535),
            json!(4294967295u64),
            json!(-4294967296i64),
        ][rng.below(6)]
        .clone(),
        4 => json!(
            [
                "",
                "/",
                "..",
                "../../etc",
                "SCMP_ACT_ALLOW",
                "CAP_SYS_ADMIN",
                "\u{0}",
                "x=y",
                "rbind",
                "tmpfs"
            ][rng.below(10)]
        ),
        5 => json!(1.5e300),
        6 => Value::Array(
            (0..rng.below(4))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ => {
            let keys = [
                "type", "path", "names", "action", "args", "index", "op", "value", "source",
                "options",
            ];
            Value::Object(
                (0..rng.below(4))
                    .map(|_| {
                        (
                            keys[rng.below(keys.len())].to_string(),
                            random_value(rng, depth + 1),
                        )
                    })
                    .collect(),
            )
        }
    }
}

/// Replaces, deletes or adds one node somewhere in `value`.
fn mutate(rng: &mut Rng, value: &mut Value, depth: u32) {
    let descend = depth < 6 && rng.below(3) != 0;
    match value {
        Value::Object(map) if descend && !map.is_empty() => {
            let key = map
                .keys()
                .nth(rng.below(map.len()))
                .cloned()
                .unwrap_or_default();
            match rng.below(4) {
                0 => {
                    map.remove(&key);
                }
                1 => {
                    map.insert(key, random_value(rng, depth));
                }
                _ => {
                    if let Some(child) = map.get_mut(&key) {
                        mutate(rng, child, depth + 1);
                    }
                }
            }
        }
        Value::Array(items) if descend && !items.is_empty() => {
            let index = rng.below(items.len());
            if rng.below(4) == 0 {
                items.remove(index);
            } else {
                mutate(rng, &mut items[index], depth + 1);
            }
        }
        _ => *value = random_value(rng, depth),
    }
}

fn seed_profile() -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
        "architectures": ["SCMP_ARCH_X86_64"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [
            {"names": ["read", "write", "mkdir"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
             "args": [{"index": 1, "value": 8, "valueTwo": 8, "op": "SCMP_CMP_MASKED_EQ"}]}
        ]
    })
}

#[test]
fn mutated_configs_and_profiles_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut config = berth_oci::defaults::spec(false);
    config["linux"]["seccomp"] = seed_profile();
    let started = Instant::now();
    let (mut cases, mut accepted) = (0u32, 0u32);
    while cases < 30_000 && started.elapsed() < Duration::from_secs(60) {
        cases += 1;
        let mut doc = config.clone();
        for _ in 0..=rng.below(3) {
            mutate(&mut rng, &mut doc, 0);
        }
        let mut bytes = serde_json::to_vec(&doc).unwrap_or_default();
        if rng.below(8) == 0 && !bytes.is_empty() {
            // Byte-level damage too: truncation or a flipped byte.
            let at = rng.below(bytes.len());
            if rng.below(2) == 0 {
                bytes.truncate(at);
            } else {
                bytes[at] ^= 1 << rng.below(8);
            }
        }
        if let Ok(spec) = Spec::from_slice(&bytes) {
            accepted += 1;
            if let Some(profile) = &spec.linux().seccomp {
                let _ = seccomp::parse(profile).and_then(|p| seccomp::compile(&p));
            }
        }
        let mut profile = seed_profile();
        mutate(&mut rng, &mut profile, 0);
        let _ = seccomp::parse(&profile).and_then(|p| seccomp::compile(&p));
    }
    eprintln!("{cases} mutated configs and profiles, {accepted} configs accepted, no panic");
    assert!(cases >= 1000, "too few cases ran: {cases}");
    assert!(
        accepted > 0,
        "the mutations never kept a valid config: the test would prove nothing"
    );
}
