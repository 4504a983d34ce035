; Studio Worker installer for Windows (NSIS 3, built by packaging/windows/build.sh).
;
; Per user, no administrator rights: installs into
; %LOCALAPPDATA%\Programs\StudioWorker, adds a Start-menu shortcut, an
; optional start at login (HKCU Run, the same value the app's own setting
; writes) and an uninstaller listed in Apps & features (HKCU).
;
; The llama.cpp runtime and stable-diffusion.cpp's DLL go into lib\ beside
; the program, where the app looks for them. By default (build.sh's
; WIN_VARIANTS=win-x64) the installer carries the CPU llama.cpp runtime
; alone: the app fetches the Vulkan or CUDA runtime that fits the PC's GPU
; from its signed release feed as a runtime pack (issue #14). An installer
; built with more variants offers one llama.cpp runtime at a time: CPU
; (default), Vulkan or CUDA.
; Silent installs choose with /RUNTIME=cpu|vulkan|cuda and /AUTOSTART; a
; GPU runtime this installer does not carry installs the CPU one, and the
; app fetches the GPU one.
;
; Settings (%LOCALAPPDATA%\studio-worker, %APPDATA%\studio-worker) and models
; are the donor's: neither the installer nor the uninstaller touches them;
; the uninstaller removes only the runtime packs the app fetched
; (%LOCALAPPDATA%\studio-worker\runtimes).
;
; Defines from build.sh: VERSION, VIVERSION (a.b.c.d), EXE, ICON, OUTFILE, SD_DLL, RT_CPU, and RT_VULKAN /
; RT_CUDA when those runtimes are included (folders of staged runtime files).

Unicode true
Target amd64-unicode
SetCompressor /SOLID lzma
RequestExecutionLevel user
ManifestDPIAware true

!define APPNAME "Studio Worker"
!define APPKEY "StudioWorker"
!define PUBLISHER "minis.gg"
!define UNINSTKEY "Software\Microsoft\Windows\CurrentVersion\Uninstall\${APPKEY}"
!define RUNKEY "Software\Microsoft\Windows\CurrentVersion\Run"

Name "${APPNAME}"
OutFile "${OUTFILE}"
InstallDir "$LOCALAPPDATA\Programs\${APPKEY}"
InstallDirRegKey HKCU "${UNINSTKEY}" "InstallLocation"
BrandingText "${APPNAME} ${VERSION}"

VIProductVersion "${VIVERSION}"
VIAddVersionKey "ProductName" "${APPNAME}"
VIAddVersionKey "ProductVersion" "${VERSION}"
VIAddVersionKey "FileVersion" "${VERSION}"
VIAddVersionKey "CompanyName" "${PUBLISHER}"
VIAddVersionKey "FileDescription" "${APPNAME} installer"
VIAddVersionKey "LegalCopyright" "${PUBLISHER}"

!include MUI2.nsh
!include Sections.nsh
!include FileFunc.nsh
!include LogicLib.nsh

!define MUI_ICON "${ICON}"
!define MUI_UNICON "${ICON}"
!define MUI_ABORTWARNING
!define MUI_COMPONENTSPAGE_SMALLDESC
!define MUI_FINISHPAGE_RUN "$INSTDIR\studio-worker.exe"
!define MUI_FINISHPAGE_RUN_TEXT "Start ${APPNAME} now"

!insertmacro MUI_PAGE_WELCOME
!insertmacro MUI_PAGE_COMPONENTS
!insertmacro MUI_PAGE_DIRECTORY
!insertmacro MUI_PAGE_INSTFILES
!insertmacro MUI_PAGE_FINISH
!insertmacro MUI_UNPAGE_CONFIRM
!insertmacro MUI_UNPAGE_INSTFILES
!insertmacro MUI_LANGUAGE "English"

Var Runtime ; the selected runtime section

; A running studio-worker.exe cannot be replaced or deleted (Windows locks a
; running program's file): ask the donor to quit it instead of failing on
; a half-copied install. Silent installs give up with an error code.
!macro EnsureNotRunning
  ${If} ${FileExists} "$INSTDIR\studio-worker.exe"
    retry_delete:
    ClearErrors
    Delete "$INSTDIR\studio-worker.exe"
    ${If} ${Errors}
      MessageBox MB_RETRYCANCEL|MB_ICONEXCLAMATION "Studio Worker is running. Quit it (tray icon > Quit), then press Retry." /SD IDCANCEL IDRETRY retry_delete
      SetErrorLevel 2
      Abort "Studio Worker is running; quit it and try again."
    ${EndIf}
  ${EndIf}
!macroend

Section "-${APPNAME}" SecApp
  SectionIn RO
  !insertmacro EnsureNotRunning
  SetOutPath "$INSTDIR"
  ; A runtime from an earlier install (maybe another variant) goes first,
  ; so that lib\ never mixes two builds.
  RMDir /r "$INSTDIR\lib"
  ; stable-diffusion.cpp (image jobs) works with every llama.cpp runtime.
  SetOutPath "$INSTDIR\lib"
  File "/oname=libstable-diffusion.dll" "${SD_DLL}"
  SetOutPath "$INSTDIR"
  File "/oname=studio-worker.exe" "${EXE}"
  File "/oname=studio-worker.ico" "${ICON}"
  WriteUninstaller "$INSTDIR\uninstall.exe"

  CreateShortCut "$SMPROGRAMS\${APPNAME}.lnk" "$INSTDIR\studio-worker.exe" "" "$INSTDIR\studio-worker.ico" 0 SW_SHOWNORMAL "" "Lend your GPU to the minis.gg studio"

  WriteRegStr HKCU "${UNINSTKEY}" "DisplayName" "${APPNAME}"
  WriteRegStr HKCU "${UNINSTKEY}" "DisplayVersion" "${VERSION}"
  WriteRegStr HKCU "${UNINSTKEY}" "Publisher" "${PUBLISHER}"
  WriteRegStr HKCU "${UNINSTKEY}" "URLInfoAbout" "https://minis.gg"
  WriteRegStr HKCU "${UNINSTKEY}" "DisplayIcon" "$INSTDIR\studio-worker.ico"
  WriteRegStr HKCU "${UNINSTKEY}" "InstallLocation" "$INSTDIR"
  WriteRegStr HKCU "${UNINSTKEY}" "UninstallString" '"$INSTDIR\uninstall.exe"'
  WriteRegStr HKCU "${UNINSTKEY}" "QuietUninstallString" '"$INSTDIR\uninstall.exe" /S'
  WriteRegDWORD HKCU "${UNINSTKEY}" "NoModify" 1
  WriteRegDWORD HKCU "${UNINSTKEY}" "NoRepair" 1
SectionEnd

; llama.cpp needs Microsoft's C++ runtime (MSVCP140, VCRUNTIME140_1), which
; most PCs have and no package registry serves for us to bundle.
!macro CheckVCRuntime
  ${IfNot} ${FileExists} "$SYSDIR\vcruntime140_1.dll"
    DetailPrint "Microsoft Visual C++ Redistributable (x64) not found: llama.cpp needs it."
    MessageBox MB_OK|MB_ICONINFORMATION "Studio Worker runs models with llama.cpp, which needs the Microsoft Visual C++ Redistributable 2015-2022 (x64).$\r$\n$\r$\nIt was not found on this PC. Install it from https://aka.ms/vs/17/release/vc_redist.x64.exe, then start Studio Worker again." /SD IDOK
  ${EndIf}
!macroend

SectionGroup /e "llama.cpp runtime (choose one)"
  Section "CPU (works everywhere)" SecCPU
    SetOutPath "$INSTDIR\lib"
    File "${RT_CPU}/*"
    !insertmacro CheckVCRuntime
  SectionEnd
!ifdef RT_VULKAN
  Section /o "Vulkan (AMD, Intel and NVIDIA GPUs)" SecVulkan
    SetOutPath "$INSTDIR\lib"
    File "${RT_VULKAN}/*"
    !insertmacro CheckVCRuntime
  SectionEnd
!endif
!ifdef RT_CUDA
  Section /o "CUDA (NVIDIA GPUs, needs CUDA 13)" SecCUDA
    SetOutPath "$INSTDIR\lib"
    File "${RT_CUDA}/*"
    !insertmacro CheckVCRuntime
    ; ggml-cuda.dll links cublas64_13.dll from NVIDIA's CUDA 13 runtime.
    System::Call 'kernel32::SearchPathW(p 0, w "cublas64_13.dll", p 0, i ${NSIS_MAX_STRLEN}, w .r1, p 0) i .r0'
    ${If} $0 == 0
      DetailPrint "cublas64_13.dll not found: the CUDA runtime needs NVIDIA's CUDA 13 runtime."
      MessageBox MB_OK|MB_ICONINFORMATION "The CUDA runtime needs NVIDIA's CUDA 13 libraries (cublas64_13.dll), which were not found.$\r$\n$\r$\nInstall the CUDA 13 toolkit or runtime, or reinstall Studio Worker with the Vulkan runtime. Until then Studio Worker runs on the CPU." /SD IDOK
    ${EndIf}
  SectionEnd
!endif
SectionGroupEnd

Section /o "Start ${APPNAME} when I log in" SecAutostart
  WriteRegStr HKCU "${RUNKEY}" "${APPNAME}" '"$INSTDIR\studio-worker.exe"'
SectionEnd

Section "-size"
  ${GetSize} "$INSTDIR" "/S=0K" $0 $1 $2
  IntFmt $0 "0x%08X" $0
  WriteRegDWORD HKCU "${UNINSTKEY}" "EstimatedSize" "$0"
SectionEnd

!insertmacro MUI_FUNCTION_DESCRIPTION_BEGIN
!ifdef RT_VULKAN | RT_CUDA
  !insertmacro MUI_DESCRIPTION_TEXT ${SecCPU} "llama.cpp for the processor. Choose this when unsure."
!else
  !insertmacro MUI_DESCRIPTION_TEXT ${SecCPU} "llama.cpp for the processor. Studio Worker fetches the Vulkan or CUDA runtime for your graphics card by itself (checked, and only used when it works)."
!endif
!ifdef RT_VULKAN
  !insertmacro MUI_DESCRIPTION_TEXT ${SecVulkan} "llama.cpp on the graphics card through Vulkan (recent AMD, Intel or NVIDIA drivers)."
!endif
!ifdef RT_CUDA
  !insertmacro MUI_DESCRIPTION_TEXT ${SecCUDA} "llama.cpp on an NVIDIA card through CUDA 13 (needs NVIDIA's CUDA 13 runtime installed)."
!endif
  !insertmacro MUI_DESCRIPTION_TEXT ${SecAutostart} "Start Studio Worker in the tray when you log in to Windows."
!insertmacro MUI_FUNCTION_DESCRIPTION_END

!macro ChooseRuntime SEC
  !insertmacro UnselectSection $Runtime
  !insertmacro SelectSection ${SEC}
  StrCpy $Runtime ${SEC}
!macroend

Function .onInit
  StrCpy $Runtime ${SecCPU}
  ${GetParameters} $R0
  ClearErrors
  ${GetOptions} $R0 "/RUNTIME=" $R1
  ${IfNot} ${Errors}
    ${If} $R1 == "cpu"
      ; the default
!ifndef RT_VULKAN
    ${ElseIf} $R1 == "vulkan"
      DetailPrint "This installer carries the CPU runtime; Studio Worker fetches the Vulkan runtime for this PC itself."
!endif
!ifndef RT_CUDA
    ${ElseIf} $R1 == "cuda"
      DetailPrint "This installer carries the CPU runtime; Studio Worker fetches the CUDA runtime for this PC itself."
!endif
!ifdef RT_VULKAN
    ${ElseIf} $R1 == "vulkan"
      !insertmacro ChooseRuntime ${SecVulkan}
!endif
!ifdef RT_CUDA
    ${ElseIf} $R1 == "cuda"
      !insertmacro ChooseRuntime ${SecCUDA}
!endif
    ${Else}
      MessageBox MB_OK|MB_ICONSTOP "Unknown runtime '$R1': use /RUNTIME=cpu, vulkan or cuda." /SD IDOK
      Abort
    ${EndIf}
  ${EndIf}
  ClearErrors
  ${GetOptions} $R0 "/AUTOSTART" $R1
  ${IfNot} ${Errors}
    !insertmacro SelectSection ${SecAutostart}
  ${EndIf}
FunctionEnd

Function .onSelChange
  !insertmacro StartRadioButtons $Runtime
    !insertmacro RadioButton ${SecCPU}
!ifdef RT_VULKAN
    !insertmacro RadioButton ${SecVulkan}
!endif
!ifdef RT_CUDA
    !insertmacro RadioButton ${SecCUDA}
!endif
  !insertmacro EndRadioButtons
FunctionEnd

Section "Uninstall"
  ; Only what the installer put here; never the donor's settings or models.
  !insertmacro EnsureNotRunning
  Delete "$INSTDIR\studio-worker.ico"
  RMDir /r "$INSTDIR\lib"
  ; Runtime packs the app fetched for this PC's GPU (engine/packs) are the
  ; program's own files, not the donor's.
  RMDir /r "$LOCALAPPDATA\studio-worker\runtimes"
  Delete "$INSTDIR\uninstall.exe"
  RMDir "$INSTDIR"
  Delete "$SMPROGRAMS\${APPNAME}.lnk"
  DeleteRegValue HKCU "${RUNKEY}" "${APPNAME}"
  DeleteRegKey HKCU "${UNINSTKEY}"
SectionEnd
