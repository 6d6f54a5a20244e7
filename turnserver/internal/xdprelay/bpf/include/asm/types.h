/* Shim: the BPF target has no multiarch include dir; the generic definitions fit it. */
#include <asm-generic/types.h>
