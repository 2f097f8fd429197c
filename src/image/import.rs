//! `rkubelet image import`: a root filesystem directory or tarball → a one-layer local image.
