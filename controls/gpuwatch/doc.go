// Package gpuwatch reads the machine for the controls decision: which
// processes use a GPU (and how hot and power-hungry the GPUs run), and
// which of the donor's named programs run. Programs implements
// controls.ProgramProbe. It only reads; it never changes a driver setting.
package gpuwatch
