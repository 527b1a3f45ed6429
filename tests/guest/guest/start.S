/* PVH entry: 32-bit protected mode, paging off, %ebx = hvm_start_info. */
        .section .note.Xen, "a"
        .balign 4
        .long 4                 /* name size: "Xen\0" */
        .long 4                 /* descriptor size */
        .long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
        .asciz "Xen"
        .balign 4
        .long _start

        .section .text.start, "ax"
        .code32
        .globl _start
_start:
        cli
        lgdt gdt_desc
        ljmp $0x08, $1f
1:      mov $0x10, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss
        mov %ax, %fs
        mov %ax, %gs
        mov $stack_top, %esp
        push %ebx
        call guest_main
2:      cli
        hlt
        jmp 2b

        /* Interrupt handlers never return with iret (the emulator under
         * nested KVM cannot run it in protected mode): each starts over on
         * a fresh stack, does its work, acknowledges the PIC and waits for
         * the next interrupt. The heartbeat lives in these handlers. */
        .globl irq0_entry
irq0_entry:
        mov $stack_top, %esp
        call on_tick
        jmp idle
        .globl irq1_entry
irq1_entry:
        mov $stack_top, %esp
        call on_key
        .globl idle
idle:
        mov $0x20, %al
        out %al, $0x20
        sti
1:      hlt
        jmp 1b

        .section .rodata
        .balign 8
gdt:
        .quad 0
        .quad 0x00cf9a000000ffff   /* 0x08: flat 32-bit code */
        .quad 0x00cf92000000ffff   /* 0x10: flat data */
gdt_end:
gdt_desc:
        .word gdt_end - gdt - 1
        .long gdt

        .bss
        .balign 16
stack:  .space 16384
stack_top:

        .section .note.GNU-stack, "", @progbits
