// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IProofVerifier} from "./IProofVerifier.sol";

/// @title UltraHonkAdapter
/// @notice Connects the OutputOracle to the UltraHonk verifier bb generates for proofline's
///         aggregate program. The oracle builds twelve public-input words from its own state
///         (see OutputOracle: previous root, new root, previous block, new block, program id,
///         chain config hash — each as two 128-bit limbs); the aggregate circuit commits eight:
///             [0,1] previous output root   [2,3] new output root
///             [4]   previous L2 block      [5]   new L2 block
///             [6,7] chain config hash
///         This adapter checks the words the circuit does not commit — the program id must be
///         this adapter's, block numbers must fit one field (high limbs zero) — and passes the
///         other eight, in the circuit's order, to the generated verifier. The generated
///         verifier embeds the aggregate program's verification key, and the aggregate program
///         pins the range program's key hash, so PROGRAM_ID names both.
contract UltraHonkAdapter is IProofVerifier {
    /// @notice The generated HonkVerifier (same `verify` shape as IProofVerifier).
    IProofVerifier public immutable HONK_VERIFIER;
    /// @notice The program id proofs must be made for (the OutputOracle's PROGRAM_ID).
    bytes32 public immutable PROGRAM_ID;

    /// @notice Words the OutputOracle passes.
    uint256 public constant ORACLE_PUBLIC_INPUTS = 12;
    /// @notice Words the aggregate circuit commits.
    uint256 public constant CIRCUIT_PUBLIC_INPUTS = 8;

    /// @notice The caller passed a number of public inputs other than twelve.
    error PublicInputsLength(uint256 length);
    /// @notice The verifier address holds no code.
    error VerifierNotContract(address verifier);

    constructor(address honkVerifier, bytes32 programId) {
        if (honkVerifier.code.length == 0) revert VerifierNotContract(honkVerifier);
        HONK_VERIFIER = IProofVerifier(honkVerifier);
        PROGRAM_ID = programId;
    }

    /// @notice True iff `proof` is an aggregate proof of this program for the transition the
    ///         twelve words describe. False (not a revert) for a statement this program cannot
    ///         have made; the generated verifier's own reverts pass through.
    function verify(bytes calldata proof, bytes32[] calldata publicInputs) external view returns (bool) {
        if (publicInputs.length != ORACLE_PUBLIC_INPUTS) revert PublicInputsLength(publicInputs.length);
        bytes32 programId = bytes32((uint256(publicInputs[8]) << 128) | uint256(publicInputs[9]));
        if (programId != PROGRAM_ID) return false;
        if (publicInputs[4] != bytes32(0) || publicInputs[6] != bytes32(0)) return false;
        bytes32[] memory inputs = new bytes32[](CIRCUIT_PUBLIC_INPUTS);
        inputs[0] = publicInputs[0];
        inputs[1] = publicInputs[1];
        inputs[2] = publicInputs[2];
        inputs[3] = publicInputs[3];
        inputs[4] = publicInputs[5];
        inputs[5] = publicInputs[7];
        inputs[6] = publicInputs[10];
        inputs[7] = publicInputs[11];
        return HONK_VERIFIER.verify(proof, inputs);
    }
}
