//! Slotted records: model-based property tests against a `HashMap`, drop accounting, serde.

use proptest::prelude::*;
use smallarena_slotted::{Entry, Record, Schema, Slot};
use std::cell::Cell;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::rc::Rc;

// ---------------------------------------------------------------------------
// Model-based property test against HashMap<String, V>
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Insert(usize, u32),
    InsertSlot(usize, u32),
    Remove(usize),
    RemoveSlot(usize),
    Get(usize),
    GetSlot(usize),
    GetMut(usize, u32),
    Contains(usize),
    EntryAdd(usize, u32),
    Iter,
    Len,
    Clear,
    CloneEq,
}

/// Key universe: indices < n are in the schema, indices >= n are unknown.
fn key_name(i: usize) -> String {
    format!("key{i}")
}

fn op_strategy(universe: usize) -> impl Strategy<Value = Op> {
    let k = 0..universe;
    prop_oneof![
        4 => (k.clone(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
        2 => (k.clone(), any::<u32>()).prop_map(|(k, v)| Op::InsertSlot(k, v)),
        2 => k.clone().prop_map(Op::Remove),
        1 => k.clone().prop_map(Op::RemoveSlot),
        2 => k.clone().prop_map(Op::Get),
        1 => k.clone().prop_map(Op::GetSlot),
        1 => (k.clone(), any::<u32>()).prop_map(|(k, v)| Op::GetMut(k, v)),
        2 => k.clone().prop_map(Op::Contains),
        1 => (k, any::<u32>()).prop_map(|(k, v)| Op::EntryAdd(k, v)),
        1 => Just(Op::Iter),
        1 => Just(Op::Len),
        1 => Just(Op::Clear),
        1 => Just(Op::CloneEq),
    ]
}

fn run_model(n: usize, ops: &[Op]) {
    let names: Vec<String> = (0..n).map(key_name).collect();
    let schema = Schema::new(names.iter());
    let slots: Vec<Slot> = names.iter().map(|k| schema.slot(k).unwrap()).collect();
    let mut rec: Record<u32> = Record::new(&schema);
    let mut model: HashMap<String, u32> = HashMap::new();

    for op in ops {
        match *op {
            Op::Insert(k, v) => {
                let key = key_name(k);
                let got = rec.insert(&key, v);
                if k < n {
                    assert_eq!(got.unwrap(), model.insert(key, v));
                } else {
                    let err = got.unwrap_err();
                    assert_eq!(err.key(), key);
                    assert_eq!(err.to_string(), format!("unknown key \"{key}\""));
                }
            }
            Op::InsertSlot(k, v) => {
                if k < n {
                    assert_eq!(rec.insert_slot(slots[k], v), model.insert(key_name(k), v));
                }
            }
            Op::Remove(k) => {
                let key = key_name(k);
                assert_eq!(rec.remove(&key), model.remove(&key));
            }
            Op::RemoveSlot(k) => {
                if k < n {
                    assert_eq!(rec.remove_slot(slots[k]), model.remove(&key_name(k)));
                }
            }
            Op::Get(k) => {
                let key = key_name(k);
                assert_eq!(rec.get(&key), model.get(&key));
            }
            Op::GetSlot(k) => {
                if k < n {
                    assert_eq!(rec.get_slot(slots[k]), model.get(&key_name(k)));
                    assert_eq!(
                        rec.contains_slot(slots[k]),
                        model.contains_key(&key_name(k))
                    );
                }
            }
            Op::GetMut(k, v) => {
                let key = key_name(k);
                let a = rec.get_mut(&key).map(|x| {
                    *x ^= v;
                    *x
                });
                let b = model.get_mut(&key).map(|x| {
                    *x ^= v;
                    *x
                });
                assert_eq!(a, b);
            }
            Op::Contains(k) => {
                let key = key_name(k);
                assert_eq!(rec.contains_key(&key), model.contains_key(&key));
            }
            Op::EntryAdd(k, v) => {
                let key = key_name(k);
                match rec.entry(&key) {
                    Ok(e) => {
                        let a = *e.and_modify(|x| *x = x.wrapping_add(v)).or_insert(v);
                        let b = *model
                            .entry(key)
                            .and_modify(|x| *x = x.wrapping_add(v))
                            .or_insert(v);
                        assert_eq!(a, b);
                    }
                    Err(err) => {
                        assert!(k >= n);
                        assert_eq!(err.key(), key);
                    }
                }
            }
            Op::Iter => {
                let got: Vec<(String, u32)> =
                    rec.iter().map(|(k, v)| (k.to_string(), *v)).collect();
                // Schema order: filter schema keys by presence in the model.
                let want: Vec<(String, u32)> = names
                    .iter()
                    .filter_map(|k| model.get(k).map(|v| (k.clone(), *v)))
                    .collect();
                assert_eq!(got, want);
                assert_eq!(rec.iter().len(), want.len());
                let keys: Vec<&str> = rec.keys().collect();
                let wk: Vec<&str> = want.iter().map(|(k, _)| k.as_str()).collect();
                assert_eq!(keys, wk);
                let vals: Vec<u32> = rec.values().copied().collect();
                let wv: Vec<u32> = want.iter().map(|(_, v)| *v).collect();
                assert_eq!(vals, wv);
            }
            Op::Len => {
                assert_eq!(rec.len(), model.len());
                assert_eq!(rec.is_empty(), model.is_empty());
            }
            Op::Clear => {
                rec.clear();
                model.clear();
            }
            Op::CloneEq => {
                let c = rec.clone();
                assert_eq!(c, rec);
                assert_eq!(hash_of(&c), hash_of(&rec));
            }
        }
    }
    assert_eq!(rec.len(), model.len());
}

fn hash_of<T: Hash>(t: &T) -> u64 {
    let mut h = DefaultHasher::new();
    t.hash(&mut h);
    h.finish()
}

/// Few cases under Miri (it is ~1000x slower); the normal run does 256.
fn model_config() -> ProptestConfig {
    ProptestConfig {
        cases: if cfg!(miri) { 3 } else { 256 },
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Longest op sequence per case: `full` normally, much shorter under Miri.
const fn max_ops(full: usize) -> usize {
    if cfg!(miri) {
        full / 8
    } else {
        full
    }
}

proptest! {
    #![proptest_config(model_config())]

    #[test]
    fn model_small_schema(ops in prop::collection::vec(op_strategy(6), 0..max_ops(80))) {
        run_model(4, &ops);
    }

    #[test]
    fn model_hashed_schema(ops in prop::collection::vec(op_strategy(40), 0..max_ops(150))) {
        run_model(30, &ops);
    }

    #[test]
    fn model_multiword_schema(ops in prop::collection::vec(op_strategy(150), 0..max_ops(300))) {
        run_model(140, &ops);
    }

    #[test]
    fn model_empty_schema(ops in prop::collection::vec(op_strategy(3), 0..20)) {
        run_model(0, &ops);
    }
}

// ---------------------------------------------------------------------------
// Drop accounting
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct Counted {
    drops: Rc<Cell<usize>>,
    id: u32,
}

impl Clone for Counted {
    fn clone(&self) -> Self {
        Counted {
            drops: self.drops.clone(),
            id: self.id,
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.drops.set(self.drops.get() + 1);
    }
}

#[test]
fn drop_accounting() {
    let drops = Rc::new(Cell::new(0));
    let c = |id| Counted {
        drops: drops.clone(),
        id,
    };
    let names: Vec<String> = (0..100).map(|i| format!("f{i}")).collect();
    let schema = Schema::new(names.iter());

    let mut r = Record::new(&schema);
    for i in 0..50u32 {
        r.insert(&format!("f{}", i * 2), c(i)).unwrap();
    }
    assert_eq!(drops.get(), 0);

    // Overwrite: the old value is returned; dropping it counts one.
    let old = r.insert("f0", c(1000)).unwrap().unwrap();
    assert_eq!(old.id, 0);
    drop(old);
    assert_eq!(drops.get(), 1);

    // Overwrite via get_mut assignment drops the old value in place.
    *r.get_mut("f2").unwrap() = c(1001);
    assert_eq!(drops.get(), 2);

    // Remove.
    drop(r.remove("f4").unwrap());
    assert_eq!(drops.get(), 3);
    assert!(r.remove("f4").is_none());
    assert!(r.remove("f5").is_none());
    assert_eq!(drops.get(), 3);

    // Unknown key: the rejected value is dropped, nothing else.
    assert!(r.insert("nope", c(7)).is_err());
    assert_eq!(drops.get(), 4);

    // Clone, then drop the clone: exactly the present values (49).
    let r2 = r.clone();
    assert_eq!(drops.get(), 4);
    drop(r2);
    assert_eq!(drops.get(), 4 + 49);

    // Clear drops all present values once.
    let mut r3 = r.clone();
    r3.clear();
    assert_eq!(drops.get(), 4 + 49 + 49);
    r3.clear();
    drop(r3);
    assert_eq!(drops.get(), 4 + 49 + 49);

    // Dropping the original drops its 49 values.
    drop(r);
    assert_eq!(drops.get(), 4 + 49 * 3);
}

/// Panics in `drop` when `boom` is set; counts every drop.
struct Bomb {
    drops: Rc<Cell<usize>>,
    boom: bool,
}

impl Drop for Bomb {
    fn drop(&mut self) {
        self.drops.set(self.drops.get() + 1);
        if self.boom {
            panic!("boom");
        }
    }
}

#[test]
fn panicking_drop_still_drops_the_rest() {
    let drops = Rc::new(Cell::new(0));
    let names: Vec<String> = (0..70).map(|i| format!("f{i}")).collect();
    let schema = Schema::new(names.iter());
    let fill = |r: &mut Record<Bomb>| {
        for (i, k) in names.iter().enumerate() {
            let boom = i == 3;
            r.insert(
                k,
                Bomb {
                    drops: drops.clone(),
                    boom,
                },
            )
            .unwrap();
        }
    };

    // Dropping the record: all 70 values are dropped once, then the panic
    // propagates (and the block is freed; Miri would report a leak).
    let mut r = Record::new(&schema);
    fill(&mut r);
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(r)));
    assert!(res.is_err());
    assert_eq!(drops.get(), 70);

    // `clear`: likewise, and the record is left empty and usable.
    let mut r = Record::new(&schema);
    fill(&mut r);
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| r.clear()));
    assert!(res.is_err());
    assert_eq!(drops.get(), 140);
    assert!(r.is_empty());
    r.insert(
        "f0",
        Bomb {
            drops: drops.clone(),
            boom: false,
        },
    )
    .unwrap();
    drop(r);
    assert_eq!(drops.get(), 141);
}

#[test]
fn string_values_no_leaks_or_double_frees() {
    let schema = Schema::new(["a", "b", "c", "d"]);
    let mut r: Record<String> = Record::new(&schema);
    for round in 0..100 {
        let k = ["a", "b", "c", "d"][round % 4];
        r.insert(k, format!("value {round}")).unwrap();
        if round % 3 == 0 {
            r.remove(["d", "c", "b", "a"][round % 4]);
        }
        if round % 17 == 0 {
            let c = r.clone();
            assert_eq!(c, r);
            r.clear();
            assert_ne!(c.len(), 0);
        }
    }
    assert_eq!(format!("{:?}", Record::<String>::new(&schema)), "{}");
}

// ---------------------------------------------------------------------------
// Schema construction, slots, equality, Debug
// ---------------------------------------------------------------------------

#[test]
fn schema_constructors() {
    let a = Schema::new(["x", "y"]);
    let owned: Vec<String> = vec!["x".into(), "y".into()];
    let b = Schema::new(owned.iter());
    let c = Schema::new(owned.clone());
    assert_eq!(a, b);
    assert_eq!(b, c);
    assert!(!Schema::ptr_eq(&a, &b));
    assert_eq!(a.len(), 2);
    assert!(!a.is_empty());
    assert_eq!(a.keys().collect::<Vec<_>>(), ["x", "y"]);
    assert_eq!(a.slot("y").unwrap().index(), 1);
    assert!(a.slot("z").is_none());
    assert!(Schema::new(Vec::<String>::new()).is_empty());
}

#[test]
fn duplicate_key_error() {
    let err = Schema::try_new(["a", "b", "a"]).unwrap_err();
    assert_eq!(err.key(), "a");
    assert_eq!(err.to_string(), "duplicate key \"a\" in schema");
    let many: Vec<String> = (0..50).map(|i| format!("k{}", i % 49)).collect::<Vec<_>>();
    assert_eq!(Schema::try_new(&many).unwrap_err().key(), "k0");
    assert!(std::panic::catch_unwind(|| Schema::new(["q", "q"])).is_err());
}

#[test]
fn cross_schema_slot_is_caught() {
    let a = Schema::new(["x", "y"]);
    let b = Schema::new(["x", "y"]);
    let slot_a = a.slot("x").unwrap();
    assert!(a.owns(slot_a));
    assert!(a.clone().owns(slot_a));
    assert!(!b.owns(slot_a));
    assert_eq!(b.key_of(slot_a), None);
    assert_eq!(a.key_of(slot_a), Some("x"));

    let mut rb: Record<u8> = Record::new(&b);
    rb.insert("x", 1).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rb.get_slot(slot_a).copied()
    }));
    let msg = r.unwrap_err();
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("different Schema"), "{msg}");
    for f in [
        |r: &mut Record<u8>, s: Slot| {
            let _ = r.insert_slot(s, 3);
        },
        |r: &mut Record<u8>, s: Slot| {
            let _ = r.remove_slot(s);
        },
        |r: &mut Record<u8>, s: Slot| {
            let _ = r.get_slot_mut(s);
        },
        |r: &mut Record<u8>, s: Slot| {
            let _ = r.contains_slot(s);
        },
        |r: &mut Record<u8>, s: Slot| {
            let _ = r.entry_slot(s).or_insert(0);
        },
    ] {
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut rb, slot_a)));
        assert!(res.is_err());
    }
    // The record is untouched by the refused calls.
    assert_eq!(rb.get("x"), Some(&1));
    assert_eq!(rb.len(), 1);
    // A slot from a clone of the record's schema works.
    let ra: Record<u8> = Record::new(&a.clone());
    assert_eq!(ra.get_slot(slot_a), None);
}

#[test]
fn equality_hash_debug_entry() {
    let s1 = Schema::new(["a", "b", "c"]);
    let s2 = Schema::new(["a", "b", "c"]);
    let s3 = Schema::new(["c", "b", "a"]);
    let mut r1 = Record::new(&s1);
    let mut r2 = Record::new(&s2);
    let mut r3 = Record::new(&s3);
    for r in [&mut r1, &mut r2, &mut r3] {
        r.insert("a", 1u64).unwrap();
        r.insert("c", 3u64).unwrap();
    }
    assert_eq!(r1, r2);
    assert_eq!(hash_of(&r1), hash_of(&r2));
    assert_ne!(r1, r3); // different key order => different schema
    assert_eq!(format!("{r1:?}"), r#"{"a": 1, "c": 3}"#);
    assert_eq!(format!("{r3:?}"), r#"{"c": 3, "a": 1}"#);
    r2.insert("b", 2).unwrap();
    assert_ne!(r1, r2);
    assert_eq!(r2["b"], 2);

    match r1.entry("b").unwrap() {
        Entry::Vacant(v) => {
            assert_eq!(v.key(), "b");
            *v.insert(5) += 1;
        }
        Entry::Occupied(_) => panic!("expected vacant"),
    }
    match r1.entry("b").unwrap() {
        Entry::Occupied(mut o) => {
            assert_eq!(*o.get(), 6);
            assert_eq!(o.insert(7), 6);
            *o.get_mut() += 1;
            assert_eq!(*o.into_mut(), 8);
        }
        Entry::Vacant(_) => panic!("expected occupied"),
    }
    for (_, v) in &mut r1 {
        *v *= 10;
    }
    assert_eq!(r1.values().copied().collect::<Vec<_>>(), [10, 80, 30]);
}

// ---------------------------------------------------------------------------
// Serde
// ---------------------------------------------------------------------------

#[cfg(feature = "serde")]
mod serde_tests {
    use serde::de::DeserializeSeed;
    use smallarena_slotted::{Record, RecordSeed, Schema};

    fn parse<V: serde::de::DeserializeOwned>(
        schema: &Schema,
        json: &str,
    ) -> Result<Record<V>, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(json);
        let r = RecordSeed::<V>::new(schema).deserialize(&mut de)?;
        de.end()?;
        Ok(r)
    }

    #[test]
    fn round_trip_in_schema_order() {
        let schema = Schema::new(["name", "lang", "year", "unused"]);
        let mut r: Record<String> = Record::new(&schema);
        r.insert("year", "1843".into()).unwrap();
        r.insert("name", "Ada".into()).unwrap();
        r.insert("lang", "Note G".into()).unwrap();
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, r#"{"name":"Ada","lang":"Note G","year":"1843"}"#);
        let back: Record<String> = parse(&schema, &json).unwrap();
        assert_eq!(back, r);

        let big = Schema::new((0..200).map(|i| format!("k{i}")));
        let mut rb: Record<u64> = Record::new(&big);
        for i in (0..200).step_by(3) {
            rb.insert(&format!("k{i}"), i as u64 * 7).unwrap();
        }
        let json = serde_json::to_string(&rb).unwrap();
        assert_eq!(parse::<u64>(&big, &json).unwrap(), rb);
        assert_eq!(parse::<u64>(&big, "{}").unwrap().len(), 0);
    }

    #[test]
    fn unknown_and_duplicate_keys_rejected() {
        let schema = Schema::new(["a", "b"]);
        let err = parse::<u32>(&schema, r#"{"a": 1, "x": 2}"#).unwrap_err();
        assert!(err.to_string().contains("unknown key \"x\""), "{err}");
        let err = parse::<u32>(&schema, r#"{"a": 1, "a": 2}"#).unwrap_err();
        assert!(err.to_string().contains("duplicate key \"a\""), "{err}");
        let err = parse::<u32>(&schema, r#"{"a": "str"}"#).unwrap_err();
        assert!(err.is_data(), "{err}");
        let err = parse::<u32>(&schema, r#"[1, 2]"#).unwrap_err();
        assert!(err.is_data(), "{err}");
    }
}
