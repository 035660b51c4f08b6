//! One way to take a `std::sync::Mutex` (or `RwLock`) that a panic may have poisoned.
//!
//! Invariant: every mutex locked through [`lock`] guards data that each critical section
//! leaves consistent at every step (single map operations, whole-value swaps), so a panic in
//! one holder cannot leave it half-changed and the data stays safe to use. Such locks are
//! held for a few steps, never across an `.await`.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};

/// Locks `mutex`, recovering the guard if an earlier holder panicked.
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Takes `lock` for reading, recovering the guard if an earlier writer panicked.
pub fn read<T: ?Sized>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_still_yields_its_data() {
        let mutex = std::sync::Arc::new(Mutex::new(vec![1]));
        let held = std::sync::Arc::clone(&mutex);
        let panicked = std::thread::spawn(move || {
            let mut guard = held.lock().unwrap();
            guard.push(2);
            panic!("holder dies");
        })
        .join();
        assert!(panicked.is_err());
        assert!(mutex.is_poisoned());
        lock(&mutex).push(3);
        assert_eq!(*lock(&mutex), [1, 2, 3]);
    }
}
