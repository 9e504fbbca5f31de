//! The current/previous pair behind every hot swap and rollback.
//!
//! Functions and models are swapped the same way: the new version serves new requests, the
//! one it replaces becomes the rollback target, and a rollback trades the two. Requests hold a
//! clone of the version they started with, so a swap never changes code under a request.

/// The version new requests get, and the one before it.
#[derive(Debug, Clone)]
pub struct Versions<T> {
    current: T,
    previous: Option<T>,
}

impl<T: Clone> Versions<T> {
    /// A first version, with nothing to roll back to.
    pub fn new(current: T) -> Self {
        Self {
            current,
            previous: None,
        }
    }

    /// The version new requests get.
    pub fn current(&self) -> &T {
        &self.current
    }

    /// The rollback target, if any.
    pub fn previous(&self) -> Option<&T> {
        self.previous.as_ref()
    }

    /// Make `new` current; the version it replaces becomes the rollback target. Returns the
    /// replaced version and the rollback target until now (`displaced`), which the caller
    /// drops where dropping is allowed to block.
    pub fn replace(&mut self, new: T) -> Replaced<T> {
        let old = std::mem::replace(&mut self.current, new);
        let displaced = self.previous.replace(old.clone());
        Replaced { old, displaced }
    }

    /// Back to the previous version, which trades places with the current one. Returns
    /// `(now, before)`, or `None` when there is nothing to roll back to.
    pub fn roll_back(&mut self) -> Option<(T, T)> {
        let previous = self.previous.take()?;
        let before = std::mem::replace(&mut self.current, previous.clone());
        self.previous = Some(before.clone());
        Some((previous, before))
    }
}

/// What [`Versions::replace`] took out of current service.
pub struct Replaced<T> {
    /// The version that was current, now the rollback target.
    pub old: T,
    /// The rollback target until now, no longer referenced by the pair.
    pub displaced: Option<T>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_swap_keeps_one_version_to_roll_back_to() {
        let mut v = Versions::new(1);
        assert!(v.clone().roll_back().is_none());
        let r = v.replace(2);
        assert_eq!((r.old, r.displaced), (1, None));
        let r = v.replace(3);
        assert_eq!((r.old, r.displaced), (2, Some(1)));
        assert_eq!((*v.current(), v.previous().copied()), (3, Some(2)));
        assert_eq!(v.roll_back(), Some((2, 3)));
        assert_eq!(v.roll_back(), Some((3, 2)));
    }
}
