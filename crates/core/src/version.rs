//! Feature-view versions (Feast 0.67): the `version` a definition pins (`"latest"`, `"v2"`,
//! `"version2"`), the `view@vN:feature` references that read a recorded version, and the
//! online-store names of a version (`{view}_v{N}`, used only with the registry's
//! `enable_online_feature_view_versioning`).

use crate::error::{ErrorClass, FeastError};

/// Parses a definition's `version`: `None` for the latest (`""` or `"latest"`, any case),
/// `Some(n)` for `"vN"` / `"versionN"` (any case).
pub fn parse_version(version: &str) -> Result<Option<i32>, FeastError> {
    if version.is_empty() || version.eq_ignore_ascii_case("latest") {
        return Ok(None);
    }
    let lower = version.to_ascii_lowercase();
    let digits = lower
        .strip_prefix("version")
        .or_else(|| lower.strip_prefix('v'))
        .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
    match digits.and_then(|d| d.parse::<i32>().ok()) {
        Some(n) => Ok(Some(n)),
        None => Err(FeastError::new(
            ErrorClass::FeastError,
            format!(
                "Invalid version string '{version}'. Expected 'latest', 'vN', or 'versionN' \
                 (e.g. 'v2', 'version3')."
            ),
        )),
    }
}

/// A parsed `view[@version][:feature]` reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewRef<'a> {
    pub view: &'a str,
    /// The pinned version; `None` for the latest (no `@`, `@latest` or an empty tag).
    pub version: Option<i32>,
    pub feature: Option<&'a str>,
}

/// Splits a reference as Feast's `_parse_feature_or_view_ref` does: the feature follows the
/// first `:`; the version follows the first `@` of the view part and must be `vN` (either
/// case) or `latest`; any other tag is not a version, and the whole view part is the name.
pub fn parse_view_ref(reference: &str) -> ViewRef<'_> {
    let (view_part, feature) = match reference.split_once(':') {
        Some((v, f)) => (v, Some(f)),
        None => (reference, None),
    };
    let Some((view, tag)) = view_part.split_once('@') else {
        return ViewRef {
            view: view_part,
            version: None,
            feature,
        };
    };
    if tag.is_empty() || tag.eq_ignore_ascii_case("latest") {
        return ViewRef {
            view,
            version: None,
            feature,
        };
    }
    let number = tag
        .strip_prefix(['v', 'V'])
        .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|d| d.parse::<i32>().ok());
    match number {
        Some(n) => ViewRef {
            view,
            version: Some(n),
            feature,
        },
        None => ViewRef {
            view: view_part,
            version: None,
            feature,
        },
    }
}

/// The name a view's online data lives under (Feast's `compute_versioned_name`): with
/// versioning enabled and a version above 0 — the pinned one, else the view's current one —
/// `{view}_v{N}`; otherwise the view's name. Version 0 shares the unversioned name.
pub fn online_view_name(view: &str, version: Option<i32>, versioning: bool) -> String {
    match version {
        Some(n) if versioning && n > 0 => format!("{view}_v{n}"),
        _ => view.to_owned(),
    }
}

/// Feast's `FeatureViewVersionNotFound`.
pub fn version_not_found(view: &str, version: i32, project: &str) -> FeastError {
    FeastError::new(
        ErrorClass::FeatureViewVersionNotFound,
        format!("Version v{version} of feature view {view} does not exist in project {project}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_as_feast() {
        assert_eq!(parse_version("").unwrap(), None);
        assert_eq!(parse_version("Latest").unwrap(), None);
        assert_eq!(parse_version("v2").unwrap(), Some(2));
        assert_eq!(parse_version("V0").unwrap(), Some(0));
        assert_eq!(parse_version("version12").unwrap(), Some(12));
        assert_eq!(parse_version("VERSION3").unwrap(), Some(3));
        for bad in ["v", "2", "v2a", "ver2", "v-1", "latest2"] {
            let e = parse_version(bad).unwrap_err();
            assert!(e.message.contains(&format!("'{bad}'")), "{bad}: {e}");
        }
    }

    #[test]
    fn references_parse_as_feast() {
        let r = |view, version, feature| ViewRef {
            view,
            version,
            feature,
        };
        assert_eq!(parse_view_ref("fv:f"), r("fv", None, Some("f")));
        assert_eq!(parse_view_ref("fv@v2:f"), r("fv", Some(2), Some("f")));
        assert_eq!(parse_view_ref("fv@V2:f"), r("fv", Some(2), Some("f")));
        assert_eq!(parse_view_ref("fv@latest:f"), r("fv", None, Some("f")));
        assert_eq!(parse_view_ref("fv@:f"), r("fv", None, Some("f")));
        assert_eq!(parse_view_ref("fv@v2"), r("fv", Some(2), None));
        assert_eq!(parse_view_ref("fv"), r("fv", None, None));
        // Not a version tag: the whole view part is the name (Feast then finds no view).
        assert_eq!(parse_view_ref("fv@x1:f"), r("fv@x1", None, Some("f")));
        assert_eq!(
            parse_view_ref("fv@version2:f"),
            r("fv@version2", None, Some("f"))
        );
        // The feature is everything after the first colon.
        assert_eq!(parse_view_ref("fv@v1:a:b"), r("fv", Some(1), Some("a:b")));
    }

    #[test]
    fn online_names_follow_compute_versioned_name() {
        assert_eq!(online_view_name("fv", Some(2), true), "fv_v2");
        assert_eq!(online_view_name("fv", Some(0), true), "fv");
        assert_eq!(online_view_name("fv", None, true), "fv");
        assert_eq!(online_view_name("fv", Some(2), false), "fv");
    }
}
