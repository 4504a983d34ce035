// A stand-in for libstable-diffusion used by lib_fake_test.go to exercise the
// refusal paths of Open: it exports the functions the binding looks up, and
// its version, commit and struct sizes are chosen at compile time.
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#ifndef FAKE_VERSION
#define FAKE_VERSION "master-826-16304cc"
#endif
#ifndef FAKE_COMMIT
#define FAKE_COMMIT "16304cc3"
#endif
#ifndef FAKE_CTX_SIZE
#define FAKE_CTX_SIZE 280
#endif

const char* sd_version(void) { return FAKE_VERSION; }
const char* sd_commit(void) { return FAKE_COMMIT; }
void sd_ctx_params_init(void* p) { memset(p, 0, FAKE_CTX_SIZE); }
char* sd_ctx_params_to_str(const void* p) { (void)p; return 0; }
void* new_sd_ctx(const void* p) { (void)p; return 0; }
void free_sd_ctx(void* c) { (void)c; }
void sd_img_gen_params_init(void* p) { memset(p, 0, 544); }
char* sd_img_gen_params_to_str(const void* p) { (void)p; return 0; }
bool generate_image(void* c, const void* p, void** out, int* n) { (void)c; (void)p; *out = 0; *n = 0; return false; }
void free_sd_images(void* i, int n) { (void)i; (void)n; }
void sd_set_log_callback(void* cb, void* d) { (void)cb; (void)d; }
void sd_set_progress_callback(void* cb, void* d) { (void)cb; (void)d; }
#ifndef FAKE_NO_CANCEL
void sd_cancel_generation(void* c, int m) { (void)c; (void)m; }
#endif
const char* sd_sample_method_name(int m) { (void)m; return "euler"; }
