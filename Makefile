# CAEM Workbench build.
#
#   make            build ./caem and build/libcaem.a
#   make test       build and run every test (also under AddressSanitizer and
#                   UndefinedBehaviorSanitizer); ends with "N passed, M failed"
#   make demo       build the corpus (make data), then run the main job: the CAEM
#                   study at its demo size (scenarios/caem_study.lua --size demo)
#   make data       build the default corpus from Debian's own text into build/data,
#                   with its SentencePiece vocabulary build/data/spm.model
#   make bench      time a training step and generation (beside the reference where
#                   installed), and a training job with and without the live screen
#   make clean      remove build outputs
#
# The first build installs missing Debian packages through tools/deps.sh.

BUILD := build
PKGS := jansson libutf8proc hdf5-serial lua5.4 readline ncursesw
# OpenBLAS built for OpenMP, so that its threads and the OpenMP loops share
# one thread pool (the default pthread build's threads compete with them). Its
# directory is not the system default, hence the rpath.
OPENBLAS_DIR := /usr/lib/x86_64-linux-gnu/openblas-openmp

# Recursive (=) so that pkg-config runs after tools/deps.sh installed the packages.
PKG_CFLAGS = $(shell PKG_CONFIG_PATH=$(OPENBLAS_DIR)/pkgconfig pkg-config --cflags openblas) \
             $(shell pkg-config --cflags $(PKGS))
PKG_LIBS = $(shell PKG_CONFIG_PATH=$(OPENBLAS_DIR)/pkgconfig pkg-config --libs openblas) \
           -Wl,-rpath,$(OPENBLAS_DIR) $(shell pkg-config --libs $(PKGS))
WARNINGS := -Wall -Wextra -Wshadow -Wpointer-arith -Wstrict-prototypes -Wmissing-prototypes \
            -Wno-unused-parameter
BASE_CFLAGS = -std=c11 -D_GNU_SOURCE -fopenmp $(WARNINGS) $(PKG_CFLAGS) -Isrc -Iui
OPT_CFLAGS ?= -O2 -g
SAN_CFLAGS := -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all \
              -fno-omit-frame-pointer
LIBS = $(PKG_LIBS) -fopenmp -lm

LIB_SRCS := $(filter-out src/main.c,$(wildcard src/*.c))
UI_SRCS := $(wildcard ui/*.c)
LIB_OBJS := $(LIB_SRCS:src/%.c=$(BUILD)/obj/%.o) $(UI_SRCS:ui/%.c=$(BUILD)/obj/ui/%.o)
SAN_OBJS := $(LIB_SRCS:src/%.c=$(BUILD)/asan/obj/%.o) $(UI_SRCS:ui/%.c=$(BUILD)/asan/obj/ui/%.o)
# ar keeps only the file name of a member, so a ui/ file named like a src/
# file would replace that file's object in libcaem.a.
UI_CLASHES := $(filter $(notdir $(UI_SRCS)),$(notdir $(LIB_SRCS)))
ifneq ($(UI_CLASHES),)
$(error ui/ and src/ both have $(UI_CLASHES); rename one, since libcaem.a holds both)
endif
TEST_SRCS := $(wildcard tests/test_*.c)
TESTS := $(TEST_SRCS:tests/%.c=$(BUILD)/tests/%)
SAN_TESTS := $(TEST_SRCS:tests/%.c=$(BUILD)/asan/tests/%)
DEPS_STAMP := $(BUILD)/deps.stamp

# CUDA: compiled and linked when nvcc is on the PATH. cuBLAS is linked
# dynamically; the rpath finds it in this toolkit, and `make gpu-bundle`
# copies it beside the binaries for a GPU server.
NVCC := $(shell command -v nvcc 2>/dev/null)
CU_SRCS := $(wildcard kernels/*.cu)
CU_HEADERS := $(wildcard kernels/*.h) src/backend.h src/backend_cuda.h src/cuda_device.h src/philox.h
CUDA_TEST_SRCS := $(wildcard tests/cuda/test_*.c)
ifneq ($(NVCC),)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CU_OBJS := $(CU_SRCS:kernels/%.cu=$(BUILD)/cuda/%.o)
NVCC_FLAGS := -O2 -std=c++20 -gencode arch=compute_80,code=sm_80 \
              -gencode arch=compute_90,code=sm_90 -Xcompiler -Wall
CUDA_CFLAGS := -DCAEM_HAVE_CUDA
CUDA_LIBS := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcudart_static \
             -ldl -lrt -lpthread -lstdc++
CUDA_TESTS := $(CUDA_TEST_SRCS:tests/cuda/%.c=$(BUILD)/tests/cuda/%)
else
CU_OBJS :=
CUDA_CFLAGS :=
CUDA_LIBS :=
CUDA_TESTS :=
endif

# The same kernels compiled with g++ against tests/cuda_emu, the host
# emulation of the CUDA runtime and cuBLAS, so that the CUDA agreement tests
# run on every machine (see tests/cuda_emu/cuda_runtime.h for what it checks).
EMU_CXXFLAGS = -std=c++20 -O1 -g -DCAEM_CUDA_EMULATION -Wall -Wextra -Wno-unused-parameter \
               -Wno-missing-field-initializers -Itests/cuda_emu -Ikernels -Isrc $(PKG_CFLAGS)
EMU_OBJS := $(CU_SRCS:kernels/%.cu=$(BUILD)/cuda_emu/%.o) $(BUILD)/cuda_emu/cuda_emu.o
EMU_TESTS := $(CUDA_TEST_SRCS:tests/cuda/%.c=$(BUILD)/tests/cuda_emu/%)
# Named only by pattern rules, these objects would count as intermediate
# files, which make deletes after linking.
.SECONDARY: $(EMU_OBJS) $(CU_OBJS) $(BUILD)/cuda_emu/host_backend.o $(BUILD)/cuda_emu/host_lua_caem.o

# Objects depend on whether CUDA is built, through a file that changes only
# when that does, so that switching nvcc on or off rebuilds them.
BUILD_CONFIG := $(BUILD)/config.txt
BUILD_CONFIG_LINE := cuda=$(if $(NVCC),yes,no)
$(shell mkdir -p $(BUILD); [ "$$(cat $(BUILD_CONFIG) 2>/dev/null)" = "$(BUILD_CONFIG_LINE)" ] || \
        echo "$(BUILD_CONFIG_LINE)" > $(BUILD_CONFIG))

.PHONY: all test demo data bench clean deps unit-tests cuda-note cuda-tests
all: cuda-note caem $(BUILD)/libcaem.a

cuda-note:
ifeq ($(NVCC),)
	@echo "build: nvcc not found on the PATH; building for the CPU only"
endif

$(DEPS_STAMP): tools/deps.sh
	@mkdir -p $(BUILD)
	@tools/deps.sh
	@touch $@

deps: $(DEPS_STAMP)

$(BUILD)/obj/%.o: src/%.c $(BUILD_CONFIG) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(OPT_CFLAGS) $(CUDA_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/asan/obj/%.o: src/%.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(SAN_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/obj/ui/%.o: ui/%.c $(BUILD_CONFIG) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(OPT_CFLAGS) $(CUDA_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/asan/obj/ui/%.o: ui/%.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(SAN_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/cuda/%.o: kernels/%.cu $(CU_HEADERS)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCC_FLAGS) -c $< -o $@

$(BUILD)/cuda_emu/%.o: kernels/%.cu $(CU_HEADERS) $(wildcard tests/cuda_emu/*.h) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CXX) $(EMU_CXXFLAGS) -x c++ -c $< -o $@

$(BUILD)/cuda_emu/cuda_emu.o: tests/cuda_emu/cuda_emu.cpp $(wildcard tests/cuda_emu/*.h) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CXX) $(EMU_CXXFLAGS) -c $< -o $@

# lua_prelude.o embeds lua/caem.lua with the assembler's .incbin, which the
# compiler's dependency files do not list.
$(BUILD)/obj/lua_prelude.o $(BUILD)/asan/obj/lua_prelude.o: lua/caem.lua

$(BUILD)/libcaem.a: $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/asan/libcaem.a: $(SAN_OBJS)
	@rm -f $@
	ar rcs $@ $^

caem: $(BUILD)/obj/main.o $(BUILD)/libcaem.a $(CU_OBJS)
	$(CC) $(OPT_CFLAGS) -o $@ $^ $(LIBS) $(CUDA_LIBS)

$(BUILD)/obj/main.o: src/main.c $(BUILD_CONFIG) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(OPT_CFLAGS) $(CUDA_CFLAGS) -MMD -MP -c $< -o $@

# backend.o in a CUDA build calls the CUDA backend, so the programs link it.
$(BUILD)/tests/%: tests/%.c $(wildcard tests/*.h) $(BUILD)/libcaem.a $(CU_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(OPT_CFLAGS) -o $@ $< $(CU_OBJS) $(BUILD)/libcaem.a $(LIBS) $(CUDA_LIBS)

$(BUILD)/asan/tests/%: tests/%.c $(wildcard tests/*.h) $(BUILD)/asan/libcaem.a
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(SAN_CFLAGS) -o $@ $< $(BUILD)/asan/libcaem.a $(LIBS)

$(BUILD)/tests/cuda/%: tests/cuda/%.c tests/cuda/cuda_check.h $(wildcard tests/*.h) $(BUILD)/libcaem.a \
                     $(CU_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(OPT_CFLAGS) $(CUDA_CFLAGS) -Itests -o $@ $< $(CU_OBJS) \
	    $(BUILD)/libcaem.a $(LIBS) $(CUDA_LIBS)

$(BUILD)/tests/cuda_emu/%: tests/cuda/%.c tests/cuda/cuda_check.h $(wildcard tests/*.h) \
                          $(BUILD)/libcaem.a $(EMU_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(OPT_CFLAGS) -Itests -o $@ $< $(EMU_OBJS) $(BUILD)/libcaem.a \
	    $(LIBS) -lstdc++

# The Lua test scripts once more with every model on the emulated CUDA
# backend: they drive training jobs, evaluation, generation, merges and
# checkpoints through it, so host code that reads device memory faults.
# backend.c and lua_caem.c are compiled again with CUDA selection built in.
EMU_HOST_OBJS := $(BUILD)/cuda_emu/host_backend.o $(BUILD)/cuda_emu/host_lua_caem.o
EMU_TESTS += $(BUILD)/tests/cuda_emu/test_lua_on_cuda

$(BUILD)/cuda_emu/host_%.o: src/%.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(OPT_CFLAGS) -DCAEM_HAVE_CUDA -c $< -o $@

$(BUILD)/tests/cuda_emu/test_lua_on_cuda: tests/test_lua.c tests/test.h tests/topics_task.h $(BUILD)/libcaem.a $(EMU_OBJS) $(EMU_HOST_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(OPT_CFLAGS) '-DCAEM_TEST_DEVICE="cuda"' -o $@ $< $(EMU_HOST_OBJS) \
	    $(EMU_OBJS) $(BUILD)/libcaem.a $(LIBS) -lstdc++

unit-tests: $(TESTS) $(SAN_TESTS) $(CUDA_TESTS) $(EMU_TESTS)

# The CUDA agreement tests alone: on the GPU where one is present (they skip
# otherwise) and under the host emulation.
cuda-tests: $(CUDA_TESTS) $(EMU_TESTS)
	@CAEM_ROOT=$(CURDIR) tests/run.sh $(CUDA_TESTS) --variant emulated $(EMU_TESTS)

# Tests read fixtures relative to the repository root. The sanitizer run
# repeats every program under CAEM_TEST_VARIANT=asan so that its result lines
# are told apart.
test: all unit-tests
	@CAEM_ROOT=$(CURDIR) tests/run.sh $(TESTS) $(CUDA_TESTS) --variant asan $(SAN_TESTS) \
	    --variant emulated $(EMU_TESTS)

# The main job: the CAEM study at its demo size (about 10 minutes on two
# cores). It pretrains an 8-expert base on the default corpus, fine-tunes one
# model per task, merges them with CAEM, fine-tunes CAEM-8 and Baseline-8 on
# all tasks and prints the comparison tables; everything lands in build/demo.
# Then it shows what the merged checkpoint holds.
DEMO_DIR := $(BUILD)/demo

demo: all data
	./caem run scenarios/caem_study.lua --size demo --out $(DEMO_DIR)
	./caem info $(DEMO_DIR)/models/CAEM-8.h5

data: all
	./caem corpus --out $(BUILD)/data

$(BUILD)/bench/bench_step: bench/bench_step.c $(BUILD)/libcaem.a $(CU_OBJS) $(BUILD_CONFIG)
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(OPT_CFLAGS) $(CUDA_CFLAGS) -o $@ $< $(CU_OBJS) $(BUILD)/libcaem.a \
	    $(LIBS) $(CUDA_LIBS)

$(BUILD)/bench/bench_generate: bench/bench_generate.c $(BUILD)/libcaem.a $(CU_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(OPT_CFLAGS) -o $@ $< $(CU_OBJS) $(BUILD)/libcaem.a $(LIBS) $(CUDA_LIBS)

# The screen's cost needs the corpus and tmux; bench/screen.sh says what is missing.
bench: all $(BUILD)/bench/bench_step $(BUILD)/bench/bench_generate
	bench/run.sh $(BUILD)/bench/bench_step $(BUILD)/bench/bench_generate
	bench/screen.sh

# A folder for a GPU server that has only the NVIDIA driver: caem, bench_step,
# the CUDA agreement tests with their fixtures, the shared libraries they load
# and run.sh, which runs the tests and times the step (tests/gpu/run.sh).
# CUBLAS=system leaves cuBLAS (about 600 MB) out; the server must then have it.
GPU_BUNDLE_DIR ?= $(BUILD)/gpu-bundle
CUBLAS ?= bundled
.PHONY: gpu-bundle
ifneq ($(NVCC),)
gpu-bundle: caem $(BUILD)/bench/bench_step $(CUDA_TESTS)
	tools/gpu_bundle.sh --cublas $(CUBLAS) $(BUILD) $(GPU_BUNDLE_DIR)
else
gpu-bundle:
	@echo "gpu-bundle needs nvcc on the PATH: the CUDA backend is built only with it" >&2
	@exit 1
endif

clean:
	rm -rf $(BUILD) caem

-include $(LIB_OBJS:.o=.d) $(SAN_OBJS:.o=.d) $(BUILD)/obj/main.d
