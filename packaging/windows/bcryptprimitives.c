/*
 * Test-only stand-in for Windows' bcryptprimitives.dll, built by
 * packaging/check.sh into the Wine prefix it runs the Windows program in.
 * Never shipped, never in the installer.
 *
 * The Go runtime (1.22 and later) gets its random bytes from ProcessPrng in
 * bcryptprimitives.dll, which it loads from the system folder at start and
 * without which it stops ("fatal error: bcryptprimitives.dll not found").
 * Windows 10 and later have it; Debian 12's Wine 8 does not. This one
 * exports that function with Windows' signature and fills the buffer from
 * RtlGenRandom (advapi32's SystemFunction036), which Wine has.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length); /* RtlGenRandom */

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG n = length > 0x40000000 ? 0x40000000 : (ULONG)length;
        if (!SystemFunction036(data, n))
            return FALSE;
        data += n;
        length -= n;
    }
    return TRUE;
}
