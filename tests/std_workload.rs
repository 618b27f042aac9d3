//! std-heavy work with SmallArena installed as this test binary's global allocator.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::mpsc;

#[global_allocator]
static GLOBAL: smallarena::SmallArena = smallarena::SmallArena::new();

#[test]
fn mode_is_arena_natively() {
    if std::env::var_os("SMALLARENA_MODE").is_none() {
        assert_eq!(format!("{:?}", smallarena::mode()), "Arena");
    }
}

#[test]
fn collections_strings_formatting() {
    let mut map: HashMap<String, Vec<u32>> = HashMap::new();
    for i in 0..20_000u32 {
        map.entry(format!("key-{}", i % 1500)).or_default().push(i);
    }
    assert_eq!(map.len(), 1500);
    let total: u64 = map
        .values()
        .map(|v| v.iter().map(|&x| x as u64).sum::<u64>())
        .sum();
    assert_eq!(total, (0..20_000u64).sum());
    let mut tree = BTreeMap::new();
    for (k, v) in &map {
        tree.insert(k.clone(), v.len());
    }
    assert_eq!(tree.values().sum::<usize>(), 20_000);
    let mut dq: VecDeque<Box<[u8]>> = VecDeque::new();
    for i in 0..5000usize {
        dq.push_back(vec![(i % 251) as u8; i % 700].into_boxed_slice());
        if i % 3 == 0 {
            let b = dq.pop_front().unwrap();
            assert!(b.iter().all(|&x| x == b.first().copied().unwrap_or(0)));
        }
    }
    let s: String = (0..3000).map(|i| format!("{i:x},")).collect();
    assert!(s.starts_with("0,1,2,"));
    let mut grow = String::new();
    for i in 0..2000 {
        grow.push_str(&i.to_string());
    }
    assert_eq!(
        grow.len(),
        (0..2000).map(|i: i32| i.to_string().len()).sum::<usize>()
    );
}

#[test]
fn threads_share_and_free_each_others_blocks() {
    let (tx, rx) = mpsc::channel::<Vec<String>>();
    let producers: Vec<_> = (0..4)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for round in 0..200 {
                    let batch: Vec<String> = (0..50).map(|i| format!("{t}/{round}/{i}")).collect();
                    tx.send(batch).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let mut n = 0;
    for batch in rx {
        for s in &batch {
            assert_eq!(s.split('/').count(), 3);
        }
        n += batch.len();
    }
    for p in producers {
        p.join().unwrap();
    }
    assert_eq!(n, 4 * 200 * 50);
}

#[test]
fn zeroed_and_realloc_paths() {
    for len in [1usize, 15, 16, 17, 100, 511, 512, 513, 4096, 100_000] {
        let v = vec![0u8; len];
        assert!(v.iter().all(|&b| b == 0), "len {len}");
        let mut w = vec![0xAAu8; len];
        w.resize(len * 3 + 7, 0x55);
        assert!(w[..len].iter().all(|&b| b == 0xAA));
        assert!(w[len..].iter().all(|&b| b == 0x55));
        w.truncate(len / 2);
        w.shrink_to_fit();
        assert!(w.iter().all(|&b| b == 0xAA));
    }
}
