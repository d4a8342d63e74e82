//! Feature refs or a feature service → the views to join, as Feast's
//! `_get_feature_views_to_use` / `_group_feature_refs` resolve them.

use std::collections::{BTreeMap, HashMap};

use feast_core::error::{ErrorClass, FeastError};
use feast_core::model::FeatureViewExt;
use feast_core::registry::Catalog;
use feast_proto::core;

use crate::error::{OfflineError, Result};

/// What to retrieve: `view:feature` refs or all of a feature service's projections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeatureSelection {
    Refs(Vec<String>),
    Service(String),
    /// What Feast's remote offline store sends: the views by name, each with the alias of
    /// the feature-service projection it was requested through (Feast applies the
    /// projection of any feature service whose projection has that alias), and refs
    /// `name_to_use:feature` naming the features.
    Views {
        views: Vec<(String, Option<String>)>,
        refs: Vec<String>,
    },
}

/// One feature view of the request, as the request or feature-service projection names it.
#[derive(Debug, Clone)]
pub struct ViewRequest<'a> {
    pub view: &'a core::FeatureView,
    /// The projection alias or the view name: the prefix of full feature names.
    pub name_to_use: String,
    /// Requested features in request order.
    pub features: Vec<String>,
    /// View join key → entity-table column (feature-service `join_key_map`).
    pub join_key_map: HashMap<String, String>,
}

impl ViewRequest<'_> {
    /// The entity-table column holding `join_key`.
    pub fn entity_column<'k>(&'k self, join_key: &'k str) -> &'k str {
        self.join_key_map
            .get(join_key)
            .map(String::as_str)
            .unwrap_or(join_key)
    }

    /// The output column name of `feature`.
    pub fn output_name(&self, feature: &str, full_feature_names: bool) -> String {
        if full_feature_names {
            format!("{}__{feature}", self.name_to_use)
        } else {
            feature.to_string()
        }
    }
}

/// Resolves `selection` against the registry, views in first-mention order.
pub fn resolve<'a>(
    catalog: &'a Catalog,
    project: &str,
    selection: &FeatureSelection,
    full_feature_names: bool,
) -> Result<Vec<ViewRequest<'a>>> {
    let mut views: Vec<ViewRequest<'a>> = Vec::new();
    match selection {
        FeatureSelection::Service(service) => {
            let fs: &core::FeatureService = catalog.get(service, project)?;
            for proj in fs.spec.iter().flat_map(|s| s.features.iter()) {
                let view = lookup_view(catalog, project, &proj.feature_view_name)?;
                let name_to_use = feast_core::model::projection_name(proj).to_string();
                let features = feast_core::model::projection_features(proj, view);
                views.push(ViewRequest {
                    view,
                    name_to_use,
                    features,
                    join_key_map: proj
                        .join_key_map
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                });
            }
        }
        FeatureSelection::Views { views: named, refs } => {
            for (name, alias) in named {
                let view = lookup_view(catalog, project, name)?;
                let mut request = ViewRequest {
                    view,
                    name_to_use: name.clone(),
                    features: Vec::new(),
                    join_key_map: HashMap::new(),
                };
                if let Some(alias) = alias {
                    request.name_to_use = alias.clone();
                    let no_tags = BTreeMap::new();
                    let projection = catalog
                        .list::<core::FeatureService>(project, &no_tags)
                        .flat_map(|fs| fs.spec.iter().flat_map(|s| s.features.iter()))
                        .find(|p| &p.feature_view_name_alias == alias);
                    if let Some(p) = projection {
                        request.join_key_map = p
                            .join_key_map
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect();
                    }
                }
                views.push(request);
            }
            add_refs(&mut views, refs, |name| {
                Err(FeastError::new(
                    ErrorClass::FeatureViewNotFoundException,
                    format!("Feature view {name} is not among the requested feature_view_names"),
                )
                .into())
            })?;
            views.retain(|v| !v.features.is_empty());
        }
        FeatureSelection::Refs(refs) => {
            add_refs(&mut views, refs, |name| lookup_view(catalog, project, name))?;
        }
    }
    check_collisions(&views, full_feature_names)?;
    Ok(views)
}

/// Adds each `view:feature` ref to the request of its view, creating the request with
/// `lookup` the first time a view is named.
fn add_refs<'a>(
    views: &mut Vec<ViewRequest<'a>>,
    refs: &[String],
    lookup: impl Fn(&str) -> Result<&'a core::FeatureView>,
) -> Result<()> {
    for reference in refs {
        let Some((name, feature)) = reference.split_once(':') else {
            return Err(OfflineError::Invalid(format!(
                "feature reference {reference:?} is not of the form \"feature_view:feature\""
            )));
        };
        let index = match views.iter().position(|r| r.name_to_use == name) {
            Some(i) => i,
            None => {
                let view = lookup(name)?;
                views.push(ViewRequest {
                    view,
                    name_to_use: name.to_string(),
                    features: Vec::new(),
                    join_key_map: HashMap::new(),
                });
                views.len() - 1
            }
        };
        let request = &mut views[index];
        if !request.view.feature_names().contains(&feature) {
            return Err(FeastError::new(
                ErrorClass::FeastObjectNotFoundException,
                format!("Feature {feature} not found in projection {name}"),
            )
            .into());
        }
        request.features.push(feature.to_string());
    }
    Ok(())
}

fn lookup_view<'a>(
    catalog: &'a Catalog,
    project: &str,
    name: &str,
) -> Result<&'a core::FeatureView> {
    if let Ok(fv) = catalog.get::<core::FeatureView>(name, project) {
        return Ok(fv);
    }
    if catalog
        .get::<core::OnDemandFeatureView>(name, project)
        .is_ok()
    {
        return Err(OfflineError::Invalid(format!(
            "{name} is an on-demand feature view: feast-rs does not execute on-demand \
             transformations yet; request the underlying feature views' features instead"
        )));
    }
    if catalog
        .get::<core::StreamFeatureView>(name, project)
        .is_ok()
    {
        return Err(OfflineError::Invalid(format!(
            "{name} is a stream feature view: feast-rs does not read stream feature views \
             offline yet"
        )));
    }
    Err(FeastError::new(
        ErrorClass::FeatureViewNotFoundException,
        format!("Feature view {name} does not exist in project {project}"),
    )
    .into())
}

fn check_collisions(views: &[ViewRequest<'_>], full: bool) -> Result<()> {
    let refs = views.iter().flat_map(|v| {
        v.features
            .iter()
            .map(|f| (v.name_to_use.as_str(), f.as_str()))
    });
    Ok(feast_core::model::check_feature_name_collisions(
        refs, full,
    )?)
}
