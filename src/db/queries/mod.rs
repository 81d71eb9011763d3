//! Every query the service runs. Functions take a connection so callers compose them inside
//! one `Db::write` transaction.

mod activities;
mod engine;
mod lifecycles;
mod plans;
mod registry;
mod tasks;
mod work;

pub use activities::*;
pub use engine::*;
pub use lifecycles::*;
pub use plans::*;
pub use registry::*;
pub use tasks::*;
pub use work::*;

type Conn = super::DbConnection;
