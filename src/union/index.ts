// Userspace overlay engine: the kernel's overlayfs rules over layer directories, no mount needed.
export { UnionFs, type UnionOptions, type UnionDirent, type EntryType, type PathOrigin, type TimeArg } from './unionfs.js';
