//! One small stable sort for the whole binary.
//!
//! The standard library's sorts (driftsort, ipnsort) are fast, but each is
//! compiled whole, several KiB, for every element type and comparison it is called
//! with: chute's couple of dozen sorts cost about 190 KB of the armv7 binary, whose
//! budget is 2 MiB. Here one merge sort over indices is compiled once (it compares
//! through a `dyn` call) and the resulting permutation is applied in place, so a
//! call site costs a few hundred bytes. Stable, O(n log n) comparisons, one
//! `usize` of scratch per element twice over. None of chute's sorts is on a hot
//! path: they order directory names, listings, chunk lists and plans.

use std::cmp::Ordering;

/// Sorts `v` stably by `cmp`.
pub fn by<T>(v: &mut [T], mut cmp: impl FnMut(&T, &T) -> Ordering) {
    if v.len() < 2 {
        return;
    }
    let order = {
        let v = &*v;
        permutation(v.len(), &mut |a, b| cmp(&v[a], &v[b]))
    };
    apply(v, order);
}

/// Sorts `v` stably by the key `key` gives each element.
pub fn by_key<T, K: Ord>(v: &mut [T], mut key: impl FnMut(&T) -> K) {
    by(v, |a, b| key(a).cmp(&key(b)));
}

/// Sorts `v` stably.
pub fn sort<T: Ord>(v: &mut [T]) {
    by(v, T::cmp);
}

/// The order that sorts `n` elements compared by index: `order[k]` is the index
/// of the element that belongs at `k`. Bottom-up merge sort, stable (a tie keeps
/// the left run's element first).
fn permutation(n: usize, cmp: &mut dyn FnMut(usize, usize) -> Ordering) -> Vec<usize> {
    let mut a: Vec<usize> = (0..n).collect();
    let mut b = vec![0usize; n];
    let mut width = 1;
    while width < n {
        let mut lo = 0;
        while lo < n {
            let mid = (lo + width).min(n);
            let hi = (lo + 2 * width).min(n);
            let (mut i, mut j, mut k) = (lo, mid, lo);
            while i < mid && j < hi {
                if cmp(a[j], a[i]) == Ordering::Less {
                    b[k] = a[j];
                    j += 1;
                } else {
                    b[k] = a[i];
                    i += 1;
                }
                k += 1;
            }
            b[k..k + (mid - i)].copy_from_slice(&a[i..mid]);
            k += mid - i;
            b[k..k + (hi - j)].copy_from_slice(&a[j..hi]);
            lo = hi;
        }
        std::mem::swap(&mut a, &mut b);
        width *= 2;
    }
    a
}

/// Moves the element `order[k]` to `k` for every `k`, following each cycle of
/// the permutation with swaps.
fn apply<T>(v: &mut [T], mut order: Vec<usize>) {
    const DONE: usize = usize::MAX;
    for i in 0..v.len() {
        if order[i] == DONE {
            continue;
        }
        let mut k = i;
        loop {
            let from = order[k];
            order[k] = DONE;
            if from == i {
                break;
            }
            v.swap(k, from);
            k = from;
        }
    }
}

#[cfg(test)]
mod tests {
    /// Agrees with the standard library's stable sort on random inputs with many
    /// ties, including which of equal elements comes first.
    #[test]
    fn agrees_with_std_and_is_stable() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for n in [0usize, 1, 2, 3, 7, 8, 9, 100, 1000, 4097] {
            let v: Vec<(u8, usize)> = (0..n)
                .map(|i| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    ((x % 10) as u8, i)
                })
                .collect();
            let mut ours = v.clone();
            super::by_key(&mut ours, |e| e.0);
            let mut theirs = v.clone();
            theirs.sort_by_key(|e| e.0);
            assert_eq!(ours, theirs, "{n} elements");
            let mut desc = v;
            super::by(&mut desc, |a, b| b.cmp(a));
            assert!(desc.windows(2).all(|w| w[0] >= w[1]));
        }
        let mut s = vec!["b", "a", "c", "a"];
        super::sort(&mut s);
        assert_eq!(s, ["a", "a", "b", "c"]);
    }
}
