//! Statuses and the engine's owed steps, with their stored spellings (ODM's names). The
//! database stores them as text (`db/types.rs`); a spelling it does not know is an error there.

/// An enum with a fixed text per variant (stored values here; label values in `metrics`).
macro_rules! stored_enum {
    ($name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Option<$name> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }

            /// "A, B, C": for error messages listing what is accepted.
            pub fn names() -> String {
                $name::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use stored_enum;

stored_enum!(ActivityStatus {
    Planned => "PLANNED",
    Processing => "PROCESSING",
    Processed => "PROCESSED",
    Failed => "FAILED",
    Aborted => "ABORTED",
});

stored_enum!(TaskStatus {
    Planned => "PLANNED",
    Processing => "PROCESSING",
    Processed => "PROCESSED",
    Failed => "FAILED",
    Aborted => "ABORTED",
});

stored_enum!(Step {
    // Send the task to its executor.
    Dispatch => "dispatch",
    // Sent (or possibly sent): wait for the callback; when due, poll or time out.
    Await => "await",
    // A callback arrived on an executor with check_after_callback: confirm with the provider.
    Confirm => "confirm",
    // The task ended (aborted, timed out) while its run may still be going: cancel it.
    Cancel => "cancel",
});

impl ActivityStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ActivityStatus::Processed | ActivityStatus::Failed | ActivityStatus::Aborted
        )
    }
}

impl TaskStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Processed | TaskStatus::Failed | TaskStatus::Aborted
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_round_trip() {
        for s in ActivityStatus::ALL {
            assert_eq!(ActivityStatus::parse(s.as_str()), Some(*s));
        }
        for s in Step::ALL {
            assert_eq!(Step::parse(s.as_str()), Some(*s));
        }
        assert_eq!(TaskStatus::parse("RUNNING"), None);
        assert_eq!(
            TaskStatus::names(),
            "PLANNED, PROCESSING, PROCESSED, FAILED, ABORTED"
        );
    }
}
