//! Ids of stored things as types of their own: a task's id cannot be passed where an
//! activity's is meant. Stored as BIGINT (`db/types.rs`).

use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub i64);

        impl $name {
            pub fn get(self) -> i64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// An activity: the run of one stage's tasks for a product version.
    ActivityId
);
id_type!(
    /// A task of an activity.
    TaskId
);
