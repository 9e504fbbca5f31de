//! What an instance builds once and keeps for the requests after the first.
//!
//! By default every request gets a fresh instance, so this changes nothing. Where a manifest
//! lets an instance serve several requests (`instance_reuse`), a function's model card,
//! labels or tokenizer are read and built by its first request only.

use std::cell::OnceCell;
use std::rc::Rc;
use std::thread::LocalKey;

/// The value in `slot`, made with `make` if this instance has none yet. A failure is
/// returned and not kept, so the next request tries again.
pub fn keep<T: 'static, E>(
    slot: &'static LocalKey<OnceCell<Rc<T>>>,
    make: impl FnOnce() -> Result<T, E>,
) -> Result<Rc<T>, E> {
    if let Some(kept) = slot.with(|s| s.get().cloned()) {
        return Ok(kept);
    }
    let made = Rc::new(make()?);
    slot.with(|s| {
        let _ = s.set(made.clone());
    });
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        static SLOT: OnceCell<Rc<u32>> = const { OnceCell::new() };
    }

    #[test]
    fn the_first_success_is_kept_and_failures_are_not() {
        let calls = Cell::new(0);
        let make = |ok: bool| {
            calls.set(calls.get() + 1);
            if ok {
                Ok(calls.get())
            } else {
                Err("unreadable")
            }
        };
        assert_eq!(keep(&SLOT, || make(false)), Err("unreadable"));
        assert_eq!(*keep(&SLOT, || make(true)).unwrap(), 2);
        assert_eq!(*keep(&SLOT, || make(true)).unwrap(), 2, "made again");
        assert_eq!(calls.get(), 2);
    }
}
