//! Guest assets: building, locating and verifying the guest kernel and initrd.
//! (being written)
