//! The seeds' status values of `CDokumente` (`FileStatus`, `XAISyncStatus`), the entity types
//! that own a collection, typed xAI ids and the SHA-256 content hash.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// A value EspoCRM stores that none of the enum's variants has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {field} value {value:?}")]
pub struct UnknownValue {
    pub field: &'static str,
    pub value: String,
}

/// One enum stored in EspoCRM as a string: variants, their stored values, `FromStr`/`Display`.
macro_rules! stored_enum {
    ($(#[$m:meta])* $name:ident, $field:literal { $($(#[$vm:meta])* $variant:ident => $value:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vm])* $variant,)*
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The value stored in EspoCRM.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $value,)*
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                match s {
                    $($value => Ok($name::$variant),)*
                    _ => Err(UnknownValue { field: $field, value: s.to_owned() }),
                }
            }
        }
    };
}

stored_enum! {
    /// `CDokumente.fileStatus`: whether the attachment changed since the last sync.
    FileStatus, "fileStatus" {
        New => "new",
        Changed => "changed",
        Synced => "synced",
    }
}

stored_enum! {
    /// `CDokumente.xaiSyncStatus`.
    XaiSyncStatus, "xaiSyncStatus" {
        /// No linked entity has (or needs) a collection.
        NoSync => "no_sync",
        /// A sync is running (under the document's lock).
        PendingSync => "pending_sync",
        /// In every required collection with the current content.
        Clean => "clean",
        /// Needs a re-sync (content or links changed).
        Unclean => "unclean",
        /// The last sync failed; `xaiSyncError` says why.
        Failed => "failed",
    }
}

stored_enum! {
    /// The EspoCRM entity types of the document sync; all but `CDokumente` own a collection.
    EntityType, "entityType" {
        Dokumente => "CDokumente",
        Beteiligte => "CBeteiligte",
        Raeumungsklage => "Raeumungsklage",
        Account => "Account",
    }
}

impl EntityType {
    /// Whether records of this type get an xAI collection of their own.
    pub fn owns_collection(self) -> bool {
        !matches!(self, EntityType::Dokumente)
    }
}

impl EntityType {
    /// The entity types that own a collection, in the order links are read.
    pub const OWNING: [EntityType; 3] = [
        EntityType::Raeumungsklage,
        EntityType::Beteiligte,
        EntityType::Account,
    ];

    /// The `CDokumente` relationship link to records of this type. The seeds name the entities
    /// but not the link names; these are assumptions documented in the README.
    pub const fn document_link(self) -> Option<&'static str> {
        match self {
            EntityType::Raeumungsklage => Some("raeumungsklagen"),
            EntityType::Beteiligte => Some("beteiligte"),
            EntityType::Account => Some("accounts"),
            EntityType::Dokumente => None,
        }
    }
}

/// The link from an owning entity to its documents (`GET {Entity}/{id}/dokumente`).
pub const DOCUMENTS_LINK: &str = "dokumente";

/// EspoCRM attribute names of the document sync (seeds 002: "EspoCRM Fields (CDokumente)").
pub mod fields {
    /// `CDokumente`: the uploaded xAI file.
    pub const XAI_ID: &str = "xaiId";
    /// `CDokumente`: the collections the file is in.
    pub const XAI_COLLECTIONS: &str = "xaiCollections";
    /// `CDokumente`: SHA-256 of the content at the last sync.
    pub const XAI_SYNCED_HASH: &str = "xaiSyncedHash";
    pub const FILE_STATUS: &str = "fileStatus";
    pub const XAI_SYNC_STATUS: &str = "xaiSyncStatus";
    pub const XAI_SYNC_ERROR: &str = "xaiSyncError";
    /// `CDokumente`: the attachment (file field `dokument`, stored as `<field>Id`; an
    /// assumption, see README).
    pub const ATTACHMENT_ID: &str = "dokumentId";
    /// Owning entities: their collection.
    pub const XAI_COLLECTION_ID: &str = "xaiCollectionId";
    /// Owning entities: compared with the configured closed statuses.
    pub const STATUS: &str = "status";
}

macro_rules! xai_id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

xai_id! {
    /// An uploaded file (`file_…`), stored in `CDokumente.xaiId`.
    XaiFileId
}

xai_id! {
    /// A collection, stored in the owning entity's `xaiCollectionId`.
    CollectionId
}

/// SHA-256 of a document's content, lowercase hex as stored in `xaiSyncedHash`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContentHash(String);

impl ContentHash {
    /// Hash of bytes held in memory.
    pub fn of(content: &[u8]) -> Self {
        let mut h = ContentHasher::default();
        h.update(content);
        h.finish()
    }

    /// A stored hash; `None` unless 64 hex digits (the seeds' MD5 values never match, which
    /// only costs one re-upload when a record moves from MD5 to SHA-256).
    pub fn parse(stored: &str) -> Option<Self> {
        let s = stored.trim();
        (s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| Self(s.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Incremental hashing, so a streamed attachment is hashed chunk by chunk.
#[derive(Default)]
pub struct ContentHasher(Sha256);

impl ContentHasher {
    pub fn update(&mut self, chunk: &[u8]) {
        self.0.update(chunk);
    }

    pub fn finish(self) -> ContentHash {
        ContentHash(hex::encode(self.0.finalize()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_values_round_trip() {
        for s in XaiSyncStatus::ALL {
            assert_eq!(s.as_str().parse::<XaiSyncStatus>(), Ok(*s));
        }
        for s in FileStatus::ALL {
            assert_eq!(s.as_str().parse::<FileStatus>(), Ok(*s));
        }
        assert_eq!("Raeumungsklage".parse(), Ok(EntityType::Raeumungsklage));
        assert!(!EntityType::Dokumente.owns_collection());
        assert_eq!(
            "synchronized".parse::<FileStatus>(),
            Err(UnknownValue {
                field: "fileStatus",
                value: "synchronized".into()
            })
        );
    }

    #[test]
    fn hashes_are_sha256_hex_and_streaming_agrees() {
        let h = ContentHash::of(b"abc");
        assert_eq!(
            h.as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mut s = ContentHasher::default();
        s.update(b"a");
        s.update(b"bc");
        assert_eq!(s.finish(), h);
        assert_eq!(ContentHash::parse(&h.as_str().to_uppercase()), Some(h));
        assert_eq!(ContentHash::parse("900150983cd24fb0d6963f7d28e17f72"), None);
    }
}
