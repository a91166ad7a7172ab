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

# CUDA: compiled and linked when nvcc is on the PATH.
NVCC := $(shell command -v nvcc 2>/dev/null)
ifneq ($(NVCC),)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CU_SRCS := $(wildcard kernels/*.cu)
CU_OBJS := $(CU_SRCS:kernels/%.cu=$(BUILD)/cuda/%.o)
NVCC_FLAGS := -O2 -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
              -Xcompiler -Wall
CUDA_CFLAGS := -DCAEM_HAVE_CUDA
CUDA_LIBS := -L$(CUDA_HOME)/lib64 -lcudart_static -ldl -lrt -lpthread -lstdc++
else
CU_OBJS :=
CUDA_CFLAGS :=
CUDA_LIBS :=
endif

# Objects depend on whether CUDA is built, through a file that changes only
# when that does, so that switching nvcc on or off rebuilds them.
BUILD_CONFIG := $(BUILD)/config.txt
BUILD_CONFIG_LINE := cuda=$(if $(NVCC),yes,no)
$(shell mkdir -p $(BUILD); [ "$$(cat $(BUILD_CONFIG) 2>/dev/null)" = "$(BUILD_CONFIG_LINE)" ] || \
        echo "$(BUILD_CONFIG_LINE)" > $(BUILD_CONFIG))

.PHONY: all test demo data bench clean deps unit-tests cuda-note
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

$(BUILD)/cuda/%.o: kernels/%.cu src/cuda_device.h
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCC_FLAGS) -c $< -o $@

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

$(BUILD)/tests/%: tests/%.c tests/test.h $(BUILD)/libcaem.a
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(OPT_CFLAGS) -o $@ $< $(BUILD)/libcaem.a $(LIBS)

$(BUILD)/asan/tests/%: tests/%.c tests/test.h $(BUILD)/asan/libcaem.a
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(SAN_CFLAGS) -o $@ $< $(BUILD)/asan/libcaem.a $(LIBS)

unit-tests: $(TESTS) $(SAN_TESTS)

# Tests read fixtures relative to the repository root. The sanitizer run
# repeats every program under CAEM_TEST_VARIANT=asan so that its result lines
# are told apart.
test: all unit-tests
	@CAEM_ROOT=$(CURDIR) tests/run.sh $(TESTS) --variant asan $(SAN_TESTS)

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

$(BUILD)/bench/bench_step: bench/bench_step.c $(BUILD)/libcaem.a
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(OPT_CFLAGS) -o $@ $< $(BUILD)/libcaem.a $(LIBS)

$(BUILD)/bench/bench_generate: bench/bench_generate.c $(BUILD)/libcaem.a
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(OPT_CFLAGS) -o $@ $< $(BUILD)/libcaem.a $(LIBS)

# The screen's cost needs the corpus and tmux; bench/screen.sh says what is missing.
bench: all $(BUILD)/bench/bench_step $(BUILD)/bench/bench_generate
	bench/run.sh $(BUILD)/bench/bench_step $(BUILD)/bench/bench_generate
	bench/screen.sh

clean:
	rm -rf $(BUILD) caem

-include $(LIB_OBJS:.o=.d) $(SAN_OBJS:.o=.d) $(BUILD)/obj/main.d
