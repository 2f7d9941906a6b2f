//! Publishes the profiles' Name -> Reference mapping to PostgreSQL
//! (`profile_parameter_names`), where the store worker reads it to map
//! renamed report keys back to full paths.

use crate::config::ProfileConfig;
use tracing::{info, warn};

pub async fn publish(
    pg_url: &str,
    profiles: &[ProfileConfig],
) -> Result<(), tokio_postgres::Error> {
    let map = super::name_map(profiles);
    if map.is_empty() {
        return Ok(());
    }
    let (client, connection) = tokio_postgres::connect(pg_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let names: Vec<&str> = map.iter().map(|m| m.0.as_str()).collect();
    let refs: Vec<&str> = map.iter().map(|m| m.1.as_str()).collect();
    let profs: Vec<&str> = map.iter().map(|m| m.2.as_str()).collect();
    client
        .execute(
            "INSERT INTO profile_parameter_names (name, reference, profile)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
             ON CONFLICT (name) DO UPDATE SET reference = excluded.reference,
                 profile = excluded.profile, updated_at = now()
             WHERE profile_parameter_names.reference <> excluded.reference
                OR profile_parameter_names.profile <> excluded.profile",
            &[&names, &refs, &profs],
        )
        .await?;
    info!(names = map.len(), "published profile parameter names");
    Ok(())
}

/// As [`publish`], logging instead of failing: provisioning works without
/// PostgreSQL, only renamed keys then stay out of the typed tables.
pub async fn publish_or_warn(pg_url: &str, profiles: &[ProfileConfig]) {
    if let Err(e) = publish(pg_url, profiles).await {
        warn!(error = %e, "could not publish profile parameter names to PostgreSQL");
    }
}
