/* A 64-bit ELF entry (no PVH note): the VMM starts us in long mode on its
 * identity page tables, %rsi = the Linux zero page. Prints a line and ends
 * as the 32-bit guest does. */
        .section .text.start, "ax"
        .code64
        .globl _start
_start:
        cli
        lea msg(%rip), %rsi
        mov $0x3f8, %dx
1:      lodsb
        test %al, %al
        jz 2f
        out %al, %dx
        jmp 1b
2:      mov $0xf4, %dx
        xor %al, %al
        out %al, %dx
        mov $0xfe, %al
        out %al, $0x64
3:      hlt
        jmp 3b

        .section .rodata
msg:    .asciz "vmtools test guest (64-bit entry): hello\n"

        .section .note.GNU-stack, "", @progbits
