//! The service says how it reaches PostgreSQL (`db::transport`): TLS on a connection from the
//! same host is the largest single cost the benchmark found, and libpq turns it on by default.

use diesel::RunQueryDsl;
use odm_devops::db::{transport, DbConnection, DbError, Transport};

use crate::helpers::{Backend, TestDb};

/// How the service's pool reaches the test's database with `params` added to its URL, and
/// whether the server offers TLS at all.
async fn reached_with(db: &TestDb, params: &str) -> (Transport, bool) {
    let separator = if db.url.contains('?') { '&' } else { '?' };
    let url = format!("{}{separator}{params}", db.url);
    let store = actix_web::web::block(move || odm_devops::db::Db::connect(&url, 1))
        .await
        .unwrap()
        .expect("the database opens");
    store
        .read(|conn| {
            let DbConnection::Pg(pg) = conn else {
                unreachable!("a PostgreSQL test")
            };
            #[derive(diesel::QueryableByName)]
            struct Ssl {
                #[diesel(sql_type = diesel::sql_types::Text)]
                ssl: String,
            }
            let offered: Ssl = diesel::sql_query("SHOW ssl").get_result(pg)?;
            Ok::<_, DbError>((transport(pg)?, offered.ssl == "on"))
        })
        .await
        .unwrap()
}

#[actix_web::test]
async fn the_connection_to_postgres_says_whether_it_is_encrypted() {
    let Some(db) = TestDb::new(Backend::Postgres) else {
        return;
    };
    let (plain, _) = reached_with(&db, "sslmode=disable").await;
    assert_eq!(plain.tls, None, "{plain:?}");
    assert!(!plain.unix_socket, "the test URL is TCP: {plain:?}");
    if db.url.contains("127.0.0.1") || db.url.contains("localhost") {
        assert!(plain.loopback, "{plain:?}");
        assert!(
            plain
                .to_string()
                .ends_with("over TCP on this host without TLS"),
            "{plain}"
        );
    }
    assert!(!plain.tls_on_loopback());

    let (preferred, offered) = reached_with(&db, "sslmode=prefer").await;
    // libpq's default: encrypted whenever the server offers it, loopback or not.
    assert_eq!(preferred.tls.is_some(), offered, "{preferred:?}");
    if offered {
        assert!(
            preferred.to_string().contains(" with TLS (TLSv1."),
            "{preferred}"
        );
    }
}

/// A URL to this host over TCP that says nothing of TLS gets none (`db::connection`
/// `without_tls_on_loopback`): libpq's default would encrypt it, at a cost, for nothing.
#[actix_web::test]
async fn a_loopback_url_that_says_nothing_of_tls_gets_none() {
    let Some(db) = TestDb::new(Backend::Postgres) else {
        return;
    };
    let loopback = db.url.contains("127.0.0.1") || db.url.contains("localhost");
    if !loopback || db.url.contains("ssl") || std::env::var_os("PGSSLMODE").is_some() {
        eprintln!("skipped: the test database's URL is not loopback TCP with libpq's default TLS");
        return;
    }
    let (reached, offered) = reached_with(&db, "application_name=odm-devops-test").await;
    assert!(reached.loopback, "{reached:?}");
    assert_eq!(
        reached.tls, None,
        "the server offers TLS: {offered}; {reached:?}"
    );
}
