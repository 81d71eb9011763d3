//! How the domain's enums and ids are stored: statuses and steps as their text, ids as BIGINT,
//! on both backends. A stored text no enum variant spells is a deserialization error (the
//! request fails with a 500 and the log names the value), never a guess.

use diesel::backend::Backend;
use diesel::deserialize::FromSqlRow;
use diesel::deserialize::{self, FromSql};
use diesel::expression::AsExpression;
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::{BigInt, Text};

use crate::domain::{ActivityId, ActivityStatus, Step, TaskId, TaskStatus};

macro_rules! stored_as_text {
    ($($kind:ident: $what:literal),+ $(,)?) => {$(
        const _: () = {
            // Derives `AsExpression` and `Queryable` for the domain type it wraps.
            #[derive(AsExpression, FromSqlRow)]
            #[diesel(foreign_derive, sql_type = Text)]
            #[allow(dead_code, reason = "never built: it only carries the derives")]
            struct Stored($kind);

            impl<DB: Backend> ToSql<Text, DB> for $kind
            where
                str: ToSql<Text, DB>,
            {
                fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, DB>) -> serialize::Result {
                    self.as_str().to_sql(out)
                }
            }

            impl<DB: Backend> FromSql<Text, DB> for $kind
            where
                String: FromSql<Text, DB>,
            {
                fn from_sql(bytes: DB::RawValue<'_>) -> deserialize::Result<Self> {
                    let text = String::from_sql(bytes)?;
                    $kind::parse(&text).ok_or_else(|| {
                        format!(
                            "the database holds {} {text:?}, which is none of {}",
                            $what,
                            $kind::names()
                        )
                        .into()
                    })
                }
            }
        };
    )+};
}

stored_as_text!(
    ActivityStatus: "an activity status",
    TaskStatus: "a task status",
    Step: "an engine step",
);

macro_rules! stored_as_bigint {
    ($($id:ident),+ $(,)?) => {$(
        const _: () = {
            #[derive(AsExpression, FromSqlRow)]
            #[diesel(foreign_derive, sql_type = BigInt)]
            #[allow(dead_code, reason = "never built: it only carries the derives")]
            struct Stored($id);

            impl<DB: Backend> ToSql<BigInt, DB> for $id
            where
                i64: ToSql<BigInt, DB>,
            {
                fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, DB>) -> serialize::Result {
                    self.0.to_sql(out)
                }
            }

            impl<DB: Backend> FromSql<BigInt, DB> for $id
            where
                i64: FromSql<BigInt, DB>,
            {
                fn from_sql(bytes: DB::RawValue<'_>) -> deserialize::Result<Self> {
                    i64::from_sql(bytes).map($id)
                }
            }
        };
    )+};
}

stored_as_bigint!(ActivityId, TaskId);
