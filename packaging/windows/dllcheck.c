/*
 * dllcheck: loads an installed llama.cpp runtime folder the way the app
 * does (ggml-base.dll, then yzma's ggml.dll, llama.dll, by full path, then
 * every backend in the folder) and reports what a packaging check needs to know:
 *   - every library loaded,
 *   - how many ggml modules ended up in the process (must be one: a second
 *     ggml has its own backend registry that llama would use instead),
 *   - the backend devices ggml registered, and llama's own view of them.
 * Exit status 0 only when all of that holds. Built with mingw-w64 by
 * packaging/windows/build.sh and run under Wine by `make package-check`;
 * it is a test tool and is never shipped.
 *
 * usage: dllcheck.exe <runtime folder>
 */
#include <windows.h>
#include <psapi.h>
#include <stdio.h>
#include <string.h>
#include <wchar.h>

typedef void (*fn_load_all_from_path)(const char *);
typedef size_t (*fn_dev_count)(void);
typedef void *(*fn_dev_get)(size_t);
typedef const char *(*fn_dev_name)(void *);
typedef void (*fn_void)(void);
typedef const char *(*fn_str)(void);

static HMODULE load(const wchar_t *dir, const wchar_t *name) {
    wchar_t path[MAX_PATH * 2];
    swprintf(path, sizeof path / sizeof path[0], L"%ls\\%ls", dir, name);
    /* yzma (through Go's syscall.LoadLibrary) calls plain LoadLibraryW. */
    HMODULE h = LoadLibraryW(path);
    if (!h) {
        fwprintf(stderr, L"dllcheck: cannot load %ls (error %lu)\n", path, GetLastError());
    } else {
        wprintf(L"loaded %ls\n", name);
    }
    return h;
}

static int count_ggml_modules(void) {
    HMODULE mods[1024];
    DWORD needed = 0;
    int n = 0;
    if (!EnumProcessModules(GetCurrentProcess(), mods, sizeof mods, &needed)) {
        fprintf(stderr, "dllcheck: EnumProcessModules failed (%lu)\n", GetLastError());
        return -1;
    }
    for (DWORD i = 0; i < needed / sizeof(HMODULE); i++) {
        wchar_t base[MAX_PATH];
        if (!GetModuleBaseNameW(GetCurrentProcess(), mods[i], base, MAX_PATH)) continue;
        /* ggml.dll and any versioned ggml.*.dll; not ggml-base / ggml-cpu-*. */
        if (_wcsnicmp(base, L"ggml.", 5) == 0) {
            wprintf(L"ggml module: %ls\n", base);
            n++;
        }
    }
    return n;
}

int wmain(int argc, wchar_t **argv) {
    if (argc != 2) {
        fwprintf(stderr, L"usage: dllcheck <runtime folder>\n");
        return 2;
    }
    const wchar_t *dir = argv[1];
    /* ggml-base.dll first: LoadLibraryW with a full path does not search
     * the DLL's own folder for its imports, so ggml.dll (which imports
     * ggml-base.dll) only loads from a folder other than the program's
     * when ggml-base.dll is already in the process. The engine does the
     * same before yzma's Load (engine/llama, Windows only). */
    HMODULE base = load(dir, L"ggml-base.dll");
    HMODULE ggml = load(dir, L"ggml.dll");
    HMODULE llama = load(dir, L"llama.dll");
    if (!ggml || !base || !llama) return 1;

    fn_load_all_from_path load_all = (fn_load_all_from_path)GetProcAddress(ggml, "ggml_backend_load_all_from_path");
    fn_dev_count dev_count = (fn_dev_count)GetProcAddress(ggml, "ggml_backend_dev_count");
    fn_dev_get dev_get = (fn_dev_get)GetProcAddress(ggml, "ggml_backend_dev_get");
    /* the device API lives in ggml-base, the registry in ggml */
    fn_dev_name dev_name = (fn_dev_name)GetProcAddress(base, "ggml_backend_dev_name");
    fn_void backend_init = (fn_void)GetProcAddress(llama, "llama_backend_init");
    fn_str system_info = (fn_str)GetProcAddress(llama, "llama_print_system_info");
    if (!load_all || !dev_count || !dev_get || !dev_name || !backend_init || !system_info) {
        fprintf(stderr, "dllcheck: a ggml/llama entry point is missing\n");
        return 1;
    }

    char dirA[MAX_PATH * 2];
    WideCharToMultiByte(CP_UTF8, 0, dir, -1, dirA, sizeof dirA, NULL, NULL);
    backend_init();
    load_all(dirA);

    size_t n = dev_count();
    printf("ggml devices: %zu\n", n);
    for (size_t i = 0; i < n; i++) printf("  device %zu: %s\n", i, dev_name(dev_get(i)));

    /* llama reads the registry of the ggml it imports: when that is the
     * same module, its system info names the CPU backend's features. */
    const char *info = system_info();
    printf("llama system info: %s\n", info);

    int ggmls = count_ggml_modules();
    printf("ggml modules loaded: %d\n", ggmls);
    if (ggmls != 1) {
        fprintf(stderr, "dllcheck: %d ggml modules in the process; their backend registries are separate\n", ggmls);
        return 1;
    }
    if (n == 0) {
        fprintf(stderr, "dllcheck: no backend device registered\n");
        return 1;
    }
    if (!strstr(info, "CPU")) {
        fprintf(stderr, "dllcheck: llama does not see the CPU backend\n");
        return 1;
    }
    printf("dllcheck: ok\n");
    return 0;
}
