//! Operators' roles and what each may do (support console, support API, audit). One table,
//! checked by every console and API route and tested as a table.

use serde::Serialize;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Service desk: sees journeys and acts on them (resend, nudge, cancel).
    Support,
    /// Compliance: reads and exports the log; never acts on a journey.
    Auditor,
    /// Manages operators and tokens, and may do what the others do.
    Admin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    ReadJourneys,
    ActOnJourneys,
    ExportAudit,
    ManageOperators,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Support, Role::Auditor, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Support => "support",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }

    /// Support may act but not export the whole log; an auditor may read and export but
    /// not act (issue: "an auditor can read and export but not act; support can act on
    /// journeys but not export the whole log").
    pub fn allows(self, p: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Support => matches!(p, ReadJourneys | ActOnJourneys),
            Role::Auditor => matches!(p, ReadJourneys | ExportAudit),
            Role::Admin => true,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not a role: use support, auditor or admin"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Permission::*;

    #[test]
    fn the_permission_table() {
        let table = [
            (Role::Support, [true, true, false, false]),
            (Role::Auditor, [true, false, true, false]),
            (Role::Admin, [true, true, true, true]),
        ];
        for (role, expected) in table {
            let got =
                [ReadJourneys, ActOnJourneys, ExportAudit, ManageOperators].map(|p| role.allows(p));
            assert_eq!(got, expected, "{role}");
        }
        assert_eq!("auditor".parse::<Role>(), Ok(Role::Auditor));
        assert!("root".parse::<Role>().is_err());
    }
}
