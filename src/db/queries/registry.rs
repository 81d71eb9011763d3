//! The embedded registry's descriptors and the values shared by replicas.

use diesel::prelude::*;

use super::Conn;
use crate::db::schema::{descriptors, service_meta};
use crate::db::DbConnection;

/// Stores a descriptor; true when it was new. Inserted first: a new version (the usual PUT)
/// then costs one statement, a replaced one two.
pub fn put_descriptor(
    conn: &mut Conn,
    product: &str,
    version: &str,
    content: &str,
    now: i64,
) -> QueryResult<bool> {
    let inserted = diesel::insert_into(descriptors::table)
        .values((
            descriptors::data_product_id.eq(product),
            descriptors::version.eq(version),
            descriptors::content.eq(content),
            descriptors::updated_at.eq(now),
        ))
        .on_conflict_do_nothing();
    // Per backend: diesel's multi-backend connection has no ON CONFLICT of its own.
    let inserted = match conn {
        DbConnection::Pg(pg) => inserted.execute(pg)?,
        DbConnection::Sqlite(sqlite) => inserted.execute(sqlite)?,
    };
    if inserted > 0 {
        return Ok(true);
    }
    diesel::update(descriptors::table.find((product, version)))
        .set((
            descriptors::content.eq(content),
            descriptors::updated_at.eq(now),
        ))
        .execute(conn)?;
    Ok(false)
}

pub fn get_descriptor(
    conn: &mut Conn,
    product: &str,
    version: &str,
) -> QueryResult<Option<String>> {
    descriptors::table
        .find((product, version))
        .select(descriptors::content)
        .first(conn)
        .optional()
}

pub fn descriptor_versions(conn: &mut Conn, product: &str) -> QueryResult<Vec<String>> {
    descriptors::table
        .filter(descriptors::data_product_id.eq(product))
        .order(descriptors::version)
        .select(descriptors::version)
        .load(conn)
}

/// A value kept once for all replicas (e.g. the generated callback secret): the first writer wins.
/// Replicas starting together may both find it missing; the later insert then does nothing
/// (on PostgreSQL it waits for the earlier one's commit) and both read the winner's value.
pub fn meta_get_or_insert(conn: &mut Conn, name: &str, candidate: &str) -> QueryResult<String> {
    let insert = diesel::insert_into(service_meta::table)
        .values((
            service_meta::name.eq(name),
            service_meta::value.eq(candidate),
        ))
        .on_conflict_do_nothing();
    match conn {
        DbConnection::Pg(pg) => insert.execute(pg)?,
        DbConnection::Sqlite(sqlite) => insert.execute(sqlite)?,
    };
    service_meta::table
        .find(name)
        .select(service_meta::value)
        .first(conn)
}
