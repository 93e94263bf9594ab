//! Reading containerd's store from the files alone (works while containerd is hung).
