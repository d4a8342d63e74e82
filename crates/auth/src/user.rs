//! The authenticated caller, as Feast's `permissions/user.py` models it.

/// Who is calling: what the policies of a `Permission` are evaluated against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    pub username: String,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
    pub namespaces: Vec<String>,
}

impl User {
    /// A user with a name and nothing else.
    pub fn new(username: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            ..Self::default()
        }
    }

    pub fn with_roles<I: IntoIterator<Item = S>, S: Into<String>>(mut self, roles: I) -> Self {
        self.roles = roles.into_iter().map(Into::into).collect();
        self
    }

    pub fn with_groups<I: IntoIterator<Item = S>, S: Into<String>>(mut self, groups: I) -> Self {
        self.groups = groups.into_iter().map(Into::into).collect();
        self
    }

    pub fn with_namespaces<I: IntoIterator<Item = S>, S: Into<String>>(mut self, ns: I) -> Self {
        self.namespaces = ns.into_iter().map(Into::into).collect();
        self
    }

    /// `has_matching_role`: the user has at least one of `roles`.
    pub fn has_matching_role(&self, roles: &[String]) -> bool {
        roles.iter().any(|r| self.roles.contains(r))
    }

    /// `has_matching_group`: the user is in at least one of `groups`.
    pub fn has_matching_group(&self, groups: &[String]) -> bool {
        groups.iter().any(|g| self.groups.contains(g))
    }

    /// `has_matching_namespace`: the user is in at least one of `namespaces`.
    pub fn has_matching_namespace(&self, namespaces: &[String]) -> bool {
        namespaces.iter().any(|n| self.namespaces.contains(n))
    }
}
