"""The AXI-Lite register map of the policy core, defined once.

The Verilog slave, the C header and the Python driver are all generated from :data:`REGISTERS` and
:func:`layout`, so the three can never disagree about an offset or a bit.
"""
from __future__ import annotations

from dataclasses import dataclass

from qpolicy_hw.bundle_schema import check_digest

CORE_ID = 0x51504C59
"""Read from ``ID``: the ASCII bytes 'QPLY', so a driver knows it talks to a qpolicy core."""
CTRL_START = 0x1
"""Write 1 to ``CTRL`` bit 0 to start an inference on the current ``IN`` registers."""
CTRL_DONE = 0x2
"""``CTRL`` bit 1 reads 1 once the outputs of the last start are in ``OUT``; a start clears it."""
IN_BASE = 0x100
OUT_BASE = 0x200
WORD = 4


@dataclass(frozen=True)
class Register:
    name: str
    offset: int
    access: str  # "rw", "ro" or "w1s" (write one to set)
    doc: str


REGISTERS = (
    Register("CTRL", 0x00, "rw", "bit 0 START (write 1 to start), bit 1 DONE (read only)"),
    Register("ID", 0x04, "ro", "0x51504C59 ('QPLY')"),
    Register("LATENCY", 0x08, "ro", "pipeline latency of the core in clock cycles"),
    Register("CYCLES", 0x0C, "ro", "clock cycles from START to DONE of the last inference"),
    Register("N_IN", 0x10, "ro", "number of input codes"),
    Register("N_OUT", 0x14, "ro", "number of output codes"),
    Register("BUNDLE_HASH", 0x18, "ro", "first 32 bits of the digest of the bundle the core was built from"),
)


def bundle_hash(digest: str) -> int:
    """What ``BUNDLE_HASH`` reads for a bundle: the first 32 bits of its SHA-256 digest."""
    return int(digest[:8], 16)


def layout(n_in: int, n_out: int) -> dict[str, int]:
    """Every register offset for a core with ``n_in`` inputs and ``n_out`` outputs."""
    regs = {r.name: r.offset for r in REGISTERS}
    regs.update({f"IN{i}": IN_BASE + WORD * i for i in range(n_in)})
    regs.update({f"OUT{j}": OUT_BASE + WORD * j for j in range(n_out)})
    if IN_BASE + WORD * n_in > OUT_BASE or OUT_BASE + WORD * n_out > 0x1000:
        raise ValueError("too many inputs or outputs for the 4 KiB register window")
    return regs


ADDR_BITS = 12  # 4 KiB AXI-Lite window


def c_header(n_in: int, n_out: int, in_bits: int, out_bits: int, latency: int, digest: str) -> str:
    check_digest(digest)   # it is printed into a C comment: hex digits only
    lines = ["/* qpolicy core register map. Generated from qpolicy_hw/register_map.py; do not edit. */",
             "#ifndef QPOLICY_CORE_REGS_H", "#define QPOLICY_CORE_REGS_H", ""]
    for r in REGISTERS:
        lines.append(f"#define QPOLICY_{r.name}_OFFSET 0x{r.offset:03X}u  /* {r.access}: {r.doc} */")
    lines += [f"#define QPOLICY_IN_OFFSET(i) (0x{IN_BASE:03X}u + {WORD}u * (i))   /* rw: signed input code i */",
              f"#define QPOLICY_OUT_OFFSET(j) (0x{OUT_BASE:03X}u + {WORD}u * (j))  /* ro: signed output code j */",
              f"#define QPOLICY_CTRL_START 0x{CTRL_START:X}u", f"#define QPOLICY_CTRL_DONE 0x{CTRL_DONE:X}u",
              f"#define QPOLICY_ID_VALUE 0x{CORE_ID:08X}u", f"#define QPOLICY_N_IN {n_in}u",
              f"#define QPOLICY_N_OUT {n_out}u", f"#define QPOLICY_IN_BITS {in_bits}u",
              f"#define QPOLICY_OUT_BITS {out_bits}u", f"#define QPOLICY_LATENCY {latency}u",
              f"#define QPOLICY_BUNDLE_HASH 0x{bundle_hash(digest):08X}u  /* bundle digest {digest[:16]}... */", "",
              "#endif", ""]
    return "\n".join(lines)


def axi_verilog(n_in: int, n_out: int, in_bits: int, out_bits: int, latency: int, core: str, digest: str) -> str:
    """An AXI4-Lite slave around the valid/ready core, with the registers above."""
    iw, ow = n_in * in_bits, n_out * out_bits
    regs = {r.name: r.offset for r in REGISTERS}
    start_bit, done_bit = CTRL_START.bit_length() - 1, CTRL_DONE.bit_length() - 1
    in_writes = "\n".join(
        f"                {ADDR_BITS}'h{IN_BASE + WORD * i:03X}: in_regs[{in_bits * i + in_bits - 1}:{in_bits * i}] <= wdata[{in_bits - 1}:0];"
        for i in range(n_in))
    out_reads = "\n".join(
        f"            {ADDR_BITS}'h{OUT_BASE + WORD * j:03X}: rdata_next = {{{{{32 - out_bits}{{out_regs[{out_bits * j + out_bits - 1}]}}}}, "
        f"out_regs[{out_bits * j + out_bits - 1}:{out_bits * j}]}};" for j in range(n_out))
    in_reads = "\n".join(
        f"            {ADDR_BITS}'h{IN_BASE + WORD * i:03X}: rdata_next = {{{{{32 - in_bits}{{in_regs[{in_bits * i + in_bits - 1}]}}}}, "
        f"in_regs[{in_bits * i + in_bits - 1}:{in_bits * i}]}};" for i in range(n_in))
    return f"""`timescale 1 ns / 1 ps
// qpolicy_axi: AXI4-Lite slave around {core}. Generated from qpolicy_hw/register_map.py; do not edit.
module qpolicy_axi (
    input s_axi_aclk,
    input s_axi_aresetn,
    input [{ADDR_BITS - 1}:0] s_axi_awaddr, input s_axi_awvalid, output reg s_axi_awready,
    input [31:0] s_axi_wdata, input [3:0] s_axi_wstrb, input s_axi_wvalid, output reg s_axi_wready,
    output reg [1:0] s_axi_bresp, output reg s_axi_bvalid, input s_axi_bready,
    input [{ADDR_BITS - 1}:0] s_axi_araddr, input s_axi_arvalid, output reg s_axi_arready,
    output reg [31:0] s_axi_rdata, output reg [1:0] s_axi_rresp, output reg s_axi_rvalid, input s_axi_rready
);
    wire clk = s_axi_aclk;
    wire rst = !s_axi_aresetn;
    reg [{iw - 1}:0] in_regs;
    reg [{ow - 1}:0] out_regs;
    reg start_pulse, done, busy;
    reg [31:0] cycles;
    wire core_out_valid;
    wire [{ow - 1}:0] core_out;
    {core} core (.clk(clk), .rst(rst), .in_valid(start_pulse), .in_data(in_regs),
                 .out_valid(core_out_valid), .out_data(core_out));

    // write channel: address and data accepted together, one response per write
    wire [31:0] wdata = s_axi_wdata;
    always @(posedge clk) begin
        start_pulse <= 1'b0;
        if (rst) begin
            s_axi_awready <= 1'b0; s_axi_wready <= 1'b0; s_axi_bvalid <= 1'b0; s_axi_bresp <= 2'b00;
            in_regs <= {{{iw}{{1'b0}}}}; done <= 1'b0; busy <= 1'b0; cycles <= 32'd0;
        end else begin
            s_axi_awready <= 1'b0; s_axi_wready <= 1'b0;
            if (s_axi_awvalid && s_axi_wvalid && !s_axi_bvalid && !s_axi_awready) begin
                s_axi_awready <= 1'b1; s_axi_wready <= 1'b1; s_axi_bvalid <= 1'b1; s_axi_bresp <= 2'b00;
                case (s_axi_awaddr)
                {ADDR_BITS}'h{regs["CTRL"]:03X}: if (wdata[{start_bit}]) begin start_pulse <= 1'b1; done <= 1'b0; busy <= 1'b1; cycles <= 32'd0; end
{in_writes}
                default: ;
                endcase
            end else if (s_axi_bvalid && s_axi_bready) begin
                s_axi_bvalid <= 1'b0;
            end
            if (busy) cycles <= cycles + 32'd1;
            if (core_out_valid) begin
                out_regs <= core_out; done <= 1'b1; busy <= 1'b0;
            end
        end
    end

    // read channel
    reg [31:0] rdata_next;
    always @(*) begin
        case (s_axi_araddr)
            {ADDR_BITS}'h{regs["CTRL"]:03X}: rdata_next = {{{{31{{1'b0}}}}, done}} << {done_bit};
            {ADDR_BITS}'h{regs["ID"]:03X}: rdata_next = 32'h{CORE_ID:08X};
            {ADDR_BITS}'h{regs["LATENCY"]:03X}: rdata_next = 32'd{latency};
            {ADDR_BITS}'h{regs["CYCLES"]:03X}: rdata_next = cycles;
            {ADDR_BITS}'h{regs["N_IN"]:03X}: rdata_next = 32'd{n_in};
            {ADDR_BITS}'h{regs["N_OUT"]:03X}: rdata_next = 32'd{n_out};
            {ADDR_BITS}'h{regs["BUNDLE_HASH"]:03X}: rdata_next = 32'h{bundle_hash(digest):08X};
{in_reads}
{out_reads}
            default: rdata_next = 32'd0;
        endcase
    end
    always @(posedge clk) begin
        if (rst) begin
            s_axi_arready <= 1'b0; s_axi_rvalid <= 1'b0; s_axi_rdata <= 32'd0; s_axi_rresp <= 2'b00;
        end else begin
            s_axi_arready <= 1'b0;
            if (s_axi_arvalid && !s_axi_rvalid && !s_axi_arready) begin
                s_axi_arready <= 1'b1; s_axi_rvalid <= 1'b1; s_axi_rdata <= rdata_next; s_axi_rresp <= 2'b00;
            end else if (s_axi_rvalid && s_axi_rready) begin
                s_axi_rvalid <= 1'b0;
            end
        end
    end
endmodule
"""
